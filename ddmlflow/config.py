"""The run configuration: a preset, overridden by explicit parameters, checked up front.

Every front end (CLI, MLproject entry points, notebooks) passes parameters as
strings; ``resolve`` turns them into one typed ``RunConfig`` and rejects bad
values with an ``InputError`` before any data is loaded or model built.
Empty strings mean "take it from the preset", so ``-P epochs=2`` overrides one
field and leaves the rest of the paper's configuration as it is.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from . import presets
from .errors import InputError, require

DATASETS = ("shapes2d", "shapes3d", "cifar10", "tf_flowers", "yale_b", "mosmed", "folder")
MODELS = ("vgg3", "vgg9", "resnet20", "resnet20a", "cnn3d")  # ddmlflow.models.MODELS, without importing Keras
STRATEGIES = ("cnn_dnn", "coherent", "transfer", "compose")
OPTIMIZERS = ("adam", "sgd", "rmsprop")

# The preset used when none is named, by data set.
DEFAULT_PRESET = {
    "shapes2d": "shapes2d-vgg3-2x2",
    "shapes3d": "shapes3d-cnn3d-2x2x1",
    "cifar10": "cifar10-vgg3-2x2",
    "tf_flowers": "flowers-vgg3-3x3",
    "yale_b": "yale-vgg3-4x4",
    "mosmed": "ct-3d-2x2x1",
    "folder": "shapes2d-vgg3-2x2",
}
_DECOMP = re.compile(r"^(\d+x\d+(x\d+)?|typeb|b)$", re.I)


@dataclass(frozen=True)
class RunConfig:
    """Everything a step needs; ``params()`` is what goes to MLflow (as strings)."""

    preset: str
    dataset: str
    data_dir: str
    model: str
    decomposition: str
    overlap: int
    width_divisor: int
    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str
    patience: int
    coarse_hidden: tuple[int, ...]
    coarse_dropout: float
    coarse_epochs: int
    coarse_batch_size: int
    coarse_learning_rate: float
    coarse_patience: int  # the coarse net's own early stopping (0: none), selected on held-out training data
    seed: int
    image_size: tuple[int, ...] | None = None
    n_train: int | None = None
    n_val: int | None = None
    extra: dict = field(default_factory=dict)

    def params(self) -> dict[str, str]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "extra":
                continue
            if isinstance(v, tuple):
                v = ",".join(map(str, v))
            out[f.name] = "" if v is None else str(v)
        return out

    def data_args(self) -> dict:
        """Arguments for ``ddmlflow.data.load``."""
        return dict(name=self.dataset, data_dir=self.data_dir or None, seed=self.seed,
                    image_size=self.image_size, n_train=self.n_train, n_val=self.n_val)


def _int(name: str, raw: str, lo: int | None = None) -> int:
    try:
        v = int(str(raw).strip())
    except ValueError:
        raise InputError(name, raw, "an integer") from None
    require(lo is None or v >= lo, name, raw, f"an integer >= {lo}")
    return v


def _float(name: str, raw: str, lo: float, hi: float, lo_open: bool = True) -> float:
    try:
        v = float(str(raw).strip())
    except ValueError:
        raise InputError(name, raw, f"a number in {'(' if lo_open else '['}{lo}, {hi}]") from None
    ok = (v > lo if lo_open else v >= lo) and v <= hi
    require(ok, name, raw, f"a number in {'(' if lo_open else '['}{lo}, {hi}]")
    return v


def _ints(name: str, raw: str, lo: int = 1) -> tuple[int, ...]:
    parts = [p for p in re.split(r"[,x ]+", str(raw).strip()) if p]
    require(bool(parts), name, raw, "comma-separated positive integers, e.g. 128,64,32")
    return tuple(_int(name, p, lo) for p in parts)


def parse_bool(name: str, raw: str | bool) -> bool:
    if isinstance(raw, bool):
        return raw
    s = str(raw).strip().lower()
    require(s in ("true", "false", "1", "0", "yes", "no"), name, raw, "true or false")
    return s in ("true", "1", "yes")


def parse_count(name: str, raw: str) -> int:
    """A positive integer; MLflow's float parameters may pass it as '2.0'."""
    try:
        v = float(str(raw).strip())
    except ValueError:
        v = 0.0
    require(v >= 1 and v.is_integer(), name, raw, "an integer >= 1")
    return int(v)


def parse_strategies(raw: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in str(raw).split(",") if s.strip())
    require(bool(names), "strategies", raw, f"comma-separated names from {', '.join(STRATEGIES)}")
    for s in names:
        require(s in STRATEGIES, "strategies", raw, f"names from {', '.join(STRATEGIES)} (unknown: {s})")
    return names


def resolve(preset: str = "", **overrides: str | int | float | None) -> RunConfig:
    """Preset values, overridden by every non-empty parameter; all checked here."""
    given = {k: str(v).strip() for k, v in overrides.items() if v is not None and str(v).strip() != ""}
    dataset = given.pop("dataset", "")
    if dataset:
        require(dataset in DATASETS, "dataset", dataset, f"one of {', '.join(DATASETS)}")
    name = preset.strip() or DEFAULT_PRESET[dataset or "shapes2d"]
    p = presets.get(name)
    dataset = dataset or p.dataset
    raw = dict(
        model=p.model, decomposition=p.decomposition, overlap=p.overlap, width_divisor=p.width_divisor,
        epochs=p.epochs, batch_size=p.batch_size, learning_rate=p.learning_rate, optimizer=p.optimizer,
        patience=p.patience, coarse_hidden=",".join(map(str, p.coarse_hidden)), coarse_dropout=p.coarse_dropout,
        coarse_epochs=p.coarse_epochs, coarse_batch_size=p.coarse_batch_size,
        coarse_learning_rate=p.coarse_learning_rate, coarse_patience=p.coarse_patience,
        seed=0, data_dir="", image_size="", n_train="", n_val="",
    )
    unknown = set(given) - set(raw)
    require(not unknown, sorted(unknown)[0] if unknown else "", "", "not a parameter of this step")
    raw.update(given)
    model = str(raw["model"])
    require(model in MODELS, "model", model, f"one of {', '.join(MODELS)}")
    decomposition = str(raw["decomposition"])
    require(bool(_DECOMP.match(decomposition)) or decomposition.endswith(".json") or decomposition.startswith("{"),
            "decomposition", decomposition, "PxP (2D), PxPxQ (3D), typeB, or a JSON file of boxes")
    optimizer = str(raw["optimizer"]).lower()
    require(optimizer in OPTIMIZERS, "optimizer", raw["optimizer"], f"one of {', '.join(OPTIMIZERS)}")
    data_dir = str(raw["data_dir"])
    require(dataset != "folder" or bool(data_dir), "data_dir", data_dir, "a folder of class subfolders (dataset=folder needs one)")
    return RunConfig(
        preset=name, dataset=dataset, data_dir=data_dir, model=model, decomposition=decomposition,
        overlap=_int("overlap", raw["overlap"], 0), width_divisor=_int("width_divisor", raw["width_divisor"], 1),
        epochs=_int("epochs", raw["epochs"], 1), batch_size=_int("batch_size", raw["batch_size"], 1),
        learning_rate=_float("learning_rate", raw["learning_rate"], 0.0, 1.0), optimizer=optimizer,
        patience=_int("patience", raw["patience"], 0), coarse_hidden=_ints("coarse_hidden", raw["coarse_hidden"]),
        coarse_dropout=_float("coarse_dropout", raw["coarse_dropout"], 0.0, 0.99, lo_open=False),
        coarse_epochs=_int("coarse_epochs", raw["coarse_epochs"], 1),
        coarse_batch_size=_int("coarse_batch_size", raw["coarse_batch_size"], 1),
        coarse_learning_rate=_float("coarse_learning_rate", raw["coarse_learning_rate"], 0.0, 1.0),
        coarse_patience=_int("coarse_patience", raw["coarse_patience"], 0),
        seed=_int("seed", raw["seed"], 0),
        image_size=_ints("image_size", raw["image_size"]) if raw["image_size"] != "" else None,
        n_train=_int("n_train", raw["n_train"], 1) if raw["n_train"] != "" else None,
        n_val=_int("n_val", raw["n_val"], 1) if raw["n_val"] != "" else None,
    )
