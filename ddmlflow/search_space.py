"""Search spaces of the ``tune`` step (KLW sec. 4, Table 1): the defaults around a preset, a user's file.

A space maps hyperparameter names to ranges: a list (choice), a scalar
(fixed) or a mapping with ``type`` choice|int|float|boolean|fixed. KLW's
default spaces are centred on the preset's values; ``load_space`` reads and
checks a user's JSON or YAML file once, with one ``InputError`` line per
problem; ``declare`` turns an entry into keras-tuner's hyperparameter.
"""

from __future__ import annotations

from pathlib import Path

import keras_tuner as kt

from .errors import InputError, require

# The hyperparameters a space may name, per kind of network.
NAMES = {
    "cnn": ("batch_size", "learning_rate", "dropout", "optimizer"),
    "coarse": ("batch_size", "learning_rate", "dropout", "hidden", "hidden_layers", "units"),
}
_TYPES = ("choice", "int", "float", "boolean", "fixed")


def load_space(path: str) -> dict:
    """A user space from a JSON or YAML file: ``{"cnn": {...}, "coarse": {...}}`` or a flat CNN space.

    Each entry is a list (choice), a scalar (fixed) or a mapping with ``type``
    choice|int|float|boolean|fixed and ``values`` / ``min``, ``max``, ``step``,
    ``sampling`` (linear|log) / ``value``. A given section replaces that kind's
    default space; what it does not name keeps the configuration's value.
    """
    p = Path(str(path))
    require(p.is_file(), "space", path, "a JSON or YAML file of hyperparameters (file not found)")
    try:
        import yaml

        raw = yaml.safe_load(p.read_text())  # YAML is a superset of JSON
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise InputError("space", path, f"valid JSON or YAML ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    require(isinstance(raw, dict) and bool(raw), "space", path, "a mapping of hyperparameter names to ranges")
    sections = raw if set(raw) <= {"cnn", "coarse"} else {"cnn": raw}
    out = {}
    for kind, entries in sections.items():
        require(isinstance(entries, dict) and bool(entries), "space", path, f"section {kind!r}: a mapping of names")
        out[kind] = {name: _spec(path, kind, name, v) for name, v in entries.items()}
        check_space(out[kind], path)
    return out


def _spec(path, kind: str, name: str, v) -> dict:
    where = f"{kind}.{name}"
    allowed = NAMES[kind]
    hint = " (coarse-net names go under a 'coarse:' section)" if kind == "cnn" and name in NAMES["coarse"] else ""
    require(name in allowed, "space", path, f"{where}: not tunable; {kind} names are {', '.join(allowed)}{hint}")
    if isinstance(v, list):
        v = {"type": "choice", "values": v}
    elif not isinstance(v, dict):
        v = {"type": "fixed", "value": v}
    require(v.get("type") in _TYPES, "space", path, f"{where}: type must be one of {', '.join(_TYPES)}")
    if name == "hidden":  # layer lists are choices of strings to keras-tuner
        key = "values" if v["type"] == "choice" else "value"
        vals = v.get(key) if v["type"] == "choice" else [v.get(key)]
        require(isinstance(vals, list) and bool(vals), "space", path, f"{where}: a list of layer lists, e.g. [[50,30]]")
        try:
            canon = [",".join(str(int(u)) for u in (h.split(",") if isinstance(h, str) else h)) for h in vals]
        except (TypeError, ValueError):
            raise InputError("space", path, f"{where}: layer lists of positive integers, e.g. [[128,64,32]]") from None
        v = {**v, key: canon if v["type"] == "choice" else canon[0]}
    return v


def check_space(space: dict, path="<space>") -> None:
    """Declare every entry on a scratch ``HyperParameters`` so keras-tuner's own checks run now, not per trial."""
    hp = kt.HyperParameters()
    for name, spec in space.items():
        try:
            value = declare(hp, name, spec)
        except (KeyError, TypeError, ValueError) as e:
            raise InputError("space", path, f"{name}: {type(e).__name__}: {e}".splitlines()[0]) from None
        values = spec.get("values", [value, spec.get("min", value), spec.get("max", value)])
        for val in values:
            _check_value(path, name, val)


def _check_value(path, name, v) -> None:
    if name == "dropout":
        require(isinstance(v, (int, float)) and 0 <= v < 1, "space", path, f"dropout: rates in [0, 1), got {v!r}")
    elif name in ("batch_size", "hidden_layers", "units"):
        require(isinstance(v, int) and v >= 1, "space", path, f"{name}: integers >= 1, got {v!r}")
    elif name == "learning_rate":
        require(isinstance(v, (int, float)) and 0 < v <= 1, "space", path, f"learning_rate: in (0, 1], got {v!r}")
    elif name == "optimizer":
        require(v in ("adam", "sgd", "rmsprop"), "space", path, f"optimizer: adam, sgd or rmsprop, got {v!r}")


def declare(hp: kt.HyperParameters, name: str, spec: dict):
    """One space entry as a keras-tuner hyperparameter; returns its current value."""
    t = spec["type"]
    if t == "choice":
        return hp.Choice(name, list(spec["values"]))
    if t == "fixed":
        return hp.Fixed(name, spec["value"])
    if t == "boolean":
        return hp.Boolean(name)
    kw = {k: spec[k] for k in ("step", "sampling") if k in spec}
    if t == "int":
        return hp.Int(name, int(spec["min"]), int(spec["max"]), **kw)
    return hp.Float(name, float(spec["min"]), float(spec["max"]), **kw)


def _around(v: float, factors, lo: float, hi: float, digits: int | None) -> dict:
    """Choices ``v * factor`` clipped to [lo, hi]; ``digits=None`` for integers."""
    return {"type": "choice", "values": sorted({round(min(hi, max(lo, v * f)), digits) for f in factors})}


def default_space(kind: str, cfg, model_dropout: float = 0.0) -> dict:
    """KLW's spaces around the configuration's values: CNNs batch size, initial learning rate, dropout
    (sec. 4); the coarse net hidden layer count and sizes, dropout, learning rate (Table 1, 'Bayesian')."""
    if kind == "cnn":
        d = model_dropout
        return {
            "batch_size": _around(cfg.batch_size, (0.5, 1, 2), 1, 4096, None),
            "learning_rate": _around(cfg.learning_rate, (0.1, 0.3, 1, 3), 1e-6, 0.1, 8),
            "dropout": {
                "type": "choice",
                "values": sorted({round(min(0.9, max(0.0, d + s)), 2) for s in (-0.1, 0, 0.1)}),
            },
        }
    return {
        "hidden_layers": {"type": "int", "min": 1, "max": 5},
        "units": {"type": "choice", "values": [16, 32, 64, 128, 256]},
        "dropout": {"type": "choice", "values": [0.0, 0.2, 0.4]},
        "learning_rate": _around(cfg.coarse_learning_rate, (0.1, 1, 10), 1e-6, 0.1, 8),
    }


def int_values(spec: dict) -> list[int]:
    if spec["type"] == "choice":
        return [int(v) for v in spec["values"]]
    if spec["type"] == "fixed":
        return [int(spec["value"])]
    return list(range(int(spec["min"]), int(spec["max"]) + 1, int(spec.get("step", 1))))
