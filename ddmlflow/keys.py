"""Step keys: a hash of what determines a step's result, so reuse follows content, not names.

A key's ingredients (logged as ``key.json`` on every run, see ``ingredients``):

- ``step``: the step's name;
- ``code``: a digest of the package modules the step runs (the import closure
  of its module), as normalised syntax trees: a changed statement retrains,
  while a changed docstring, comment, formatting or an unrelated module does
  not. The trees are dumped without docstrings and line numbers, so
  ``ruff format`` or a reworded docstring keeps every key;
- ``params``: the run configuration's values that change the result (not the
  data folder's path: its content is in the decompose key; not executor,
  GPUs, parallelism, experiment or run names, which are in no config field
  that reaches a key); the decomposition as resolved (its boxes or grid),
  not how it was spelled or where its JSON file lies;
- ``data`` (``decompose`` only): a digest of the data's bytes under
  ``data_dir`` (relative paths and contents), or the generator's name;
- ``upstream``: the keys of the steps whose runs it consumes, so a
  recomputed decomposition retrains every local, while the same data copied
  to another folder reuses them all.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent


# -- code -------------------------------------------------------------------------------------------


def _module_file(name: str) -> Path | None:
    """The file of ``ddmlflow.<name>`` ('' is the package itself), or None."""
    base = PACKAGE.joinpath(*name.split(".")) if name else PACKAGE
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _imports(name: str, tree: ast.AST) -> set[str]:
    """Package modules (names below ``ddmlflow``) that ``name`` imports, at any level (function-level too)."""
    is_pkg = _module_file(name) == PACKAGE.joinpath(*name.split("."), "__init__.py") if name else True
    here = name.split(".") if name else []
    package = here if is_pkg else here[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(
                a.name.removeprefix("ddmlflow").lstrip(".")
                for a in node.names
                if a.name == "ddmlflow" or a.name.startswith("ddmlflow.")
            )
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == "ddmlflow" or node.module.startswith("ddmlflow.")):
                mod = node.module.removeprefix("ddmlflow").lstrip(".")
            else:
                continue
            out.add(mod)
            out.update(f"{mod}.{a.name}".lstrip(".") for a in node.names if _module_file(f"{mod}.{a.name}".lstrip(".")))
        elif _relative_import_module(node):  # models/__init__ picks its builders by name: all of the package
            pkg = ".".join(package)
            out.update(
                f"{pkg}.{p.stem}".lstrip(".") for p in PACKAGE.joinpath(*package).glob("*.py") if p.stem != "__init__"
            )
    return {m for m in out if _module_file(m) is not None}


def _relative_import_module(node: ast.AST) -> bool:
    """``importlib.import_module(f".{name}", __name__)``: a module of this package chosen at run time."""
    if not (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "import_module"
        and node.args
    ):
        return False
    first = node.args[0]
    head = first.values[0] if isinstance(first, ast.JoinedStr) and first.values else first
    return isinstance(head, ast.Constant) and isinstance(head.value, str) and head.value.startswith(".")


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            first = body[0] if body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


@functools.cache
def _parsed(name: str) -> tuple[str, frozenset[str]]:
    """(normalised dump, imported package modules) of one module, once per process."""
    path = _module_file(name)
    assert path is not None, f"ddmlflow.{name}: not a module of the package"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    deps = frozenset(_imports(name, tree))
    return ast.dump(_strip_docstrings(tree), annotate_fields=False, include_attributes=False), deps


def closure(roots: tuple[str, ...]) -> list[str]:
    """The package modules ``roots`` run: their imports, transitively, with every enclosing package."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        m = todo.pop()
        if m in seen or _module_file(m) is None:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(len(parts))]  # importing a.b runs a/__init__ first
        todo += _parsed(m)[1]
    return sorted(seen)


@functools.cache
def code_digest(roots: tuple[str, ...]) -> str:
    """Digest of the normalised syntax trees of the modules ``roots`` run (see the module docstring)."""
    h = hashlib.sha256()
    for m in closure(roots):
        h.update(f"{m}\0{_parsed(m)[0]}\0".encode())
    return h.hexdigest()[:16]


# -- data -------------------------------------------------------------------------------------------


def data_digest(dataset: str, data_dir: str) -> dict[str, Any]:
    """What the data is, by content: relative path and bytes of every file under ``data_dir`` (hidden
    files and folders aside), or the generator / Keras data set by name when there is no folder.

    Reading every byte is the cost (no stat-based shortcut: a file's path and mtime are not its content);
    ``benchmarks/README.md`` has the figure for the shared CIFAR-10.
    """
    if not data_dir:
        return {"dataset": dataset, "source": "generated" if dataset.startswith("shapes") else "keras"}
    root = Path(data_dir).expanduser().resolve()
    h, n, size = hashlib.blake2b(digest_size=16), 0, 0
    for rel in _files(root):
        p = root / rel
        h.update(f"{rel}\0{p.stat().st_size}\0".encode())
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
        n += 1
    return {"dataset": dataset, "content": h.hexdigest(), "files": n, "bytes": size}


def _files(root: Path) -> list[str]:
    """Relative paths of the regular files below ``root``, sorted; hidden names skipped."""
    if root.is_file():
        return [""]
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        rel = Path(d).relative_to(root)
        out += [str(rel / f) for f in files if not f.startswith(".")]
    return sorted(out)


# -- keys -------------------------------------------------------------------------------------------


def ingredients(
    step: str,
    code_roots: tuple[str, ...],
    params: dict[str, str],
    upstream: dict[str, object],
    inputs: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a key hashes, as logged in ``key.json``."""
    out: dict[str, Any] = {
        "step": step,
        "code": code_digest(tuple(sorted(code_roots))),
        "params": dict(sorted(params.items())),
        "upstream": upstream,
        "inputs": inputs or {},
    }
    if data is not None:
        out["data"] = data
    return out


def digest(ingredients: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(ingredients, sort_keys=True, default=str).encode()).hexdigest()[:16]
