"""The option parsers of the schema: (option name, raw string) -> typed value, or one ``InputError`` line.

Every front end passes strings (the CLI, ``mlflow run -P``, notebooks); each
``config`` field names one of these, so a value is checked once, where the
schema turns it into its type.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .devices import parse_gpus
from .errors import InputError, require

Parser = Callable[[str, str], Any]


def text(name: str, raw: str) -> str:
    return str(raw).strip()


def integer(lo: int | None = None) -> Parser:
    def parse(name: str, raw: str) -> int:
        try:  # MLflow's float parameters may pass an integer as '2.0'
            v = float(str(raw).strip())
        except ValueError:
            raise InputError(name, raw, "an integer" + (f" >= {lo}" if lo is not None else "")) from None
        require(
            v.is_integer() and (lo is None or v >= lo),
            name,
            raw,
            "an integer" + (f" >= {lo}" if lo is not None else ""),
        )
        return int(v)

    return parse


def number(lo: float, hi: float, lo_open: bool = True) -> Parser:
    allowed = f"a number in {'(' if lo_open else '['}{lo}, {hi}]"

    def parse(name: str, raw: str) -> float:
        try:
            v = float(str(raw).strip())
        except ValueError:
            raise InputError(name, raw, allowed) from None
        require((v > lo if lo_open else v >= lo) and v <= hi, name, raw, allowed)
        return v

    return parse


def choice(names_of: Callable[[], tuple[str, ...]], lower: bool = False) -> Parser:
    """One name from a list owned by the module that implements the kind (read lazily)."""

    def parse(name: str, raw: str) -> str:
        v = str(raw).strip().lower() if lower else str(raw).strip()
        require(v in names_of(), name, raw, f"one of {', '.join(names_of())}")
        return v

    return parse


def choices(names_of: Callable[[], tuple[str, ...]]) -> Parser:
    def parse(name: str, raw: str) -> tuple[str, ...]:
        names = tuple(s.strip() for s in str(raw).split(",") if s.strip())
        allowed = f"comma-separated names from {', '.join(names_of())}"
        require(bool(names), name, raw, allowed)
        for s in names:
            require(s in names_of(), name, raw, f"{allowed} (unknown: {s})")
        return names

    return parse


def integers(name: str, raw: str) -> tuple[int, ...]:
    parts = [p for p in re.split(r"[,x ]+", str(raw).strip()) if p]
    require(bool(parts), name, raw, "comma-separated positive integers, e.g. 128,64,32")
    return tuple(integer(1)(name, p) for p in parts)


def boolean(name: str, raw: str | bool) -> bool:
    if isinstance(raw, bool):
        return raw
    s = str(raw).strip().lower()
    require(s in ("true", "false", "1", "0", "yes", "no"), name, raw, "true or false")
    return s in ("true", "1", "yes")


def optional(parse: Parser) -> Parser:
    """Empty means None (no value)."""
    return lambda name, raw: None if str(raw).strip() == "" else parse(name, raw)


def decomposition_spec(name: str, raw: str) -> str:
    from .decomposition import check_spec  # lazy: NumPy; the schema (`ddmlflow --help`) must not load it

    return check_spec(str(raw).strip())


def run_ids(name: str, raw: str) -> tuple[str, ...]:
    """Comma-separated MLflow run ids (empty: none)."""
    return tuple(p.strip() for p in str(raw).split(",") if p.strip())


def gpu_list(name: str, raw: str) -> tuple[str, ...]:
    return tuple(parse_gpus(raw))


def registry_names(module: str, attr: str) -> Callable[[], tuple[str, ...]]:
    """The names of a registry below this module (data sets, networks, optimizers), read when a value is
    checked: importing them loads NumPy, which ``ddmlflow --help`` must not."""

    def get() -> tuple[str, ...]:
        import importlib

        return tuple(getattr(importlib.import_module(f"ddmlflow.{module}"), attr))

    return get
