"""Each paper table as a named experiment: the ``full`` configurations that fill it, and budgets.

    from ddmlflow.experiments import get, budget
    exp = get("klw-3")                     # KLW Table 3: CIFAR-10, VGG3, 2x2, overlap 0 / 2 / 4
    for r in exp.runs: print(r.name, r.config_overrides(budget("smoke", r.dataset, r.net)))

A budget says how much of the paper's setup a run uses; it is logged and printed
with every result, so a ``cpu`` number is never mistaken for a ``paper`` one:

- ``smoke``: a tiny subset and 1 epoch (coarse net too): checks the plumbing in
  minutes; its accuracies mean nothing.
- ``cpu``: about an hour per table on the reference machine (the 2-core CPU this
  package is developed on; ``reproduce --estimate`` says how long on yours): all
  of CIFAR-10 and as many epochs as fit, per network (VGG3 more than VGG9 or
  ResNet20), the coarse net with its own early stopping under a cap; the other
  data sets a subset and the 3D data at half resolution. Orderings, and values
  roughly, are comparable.
- ``paper``: the preset as the paper has it (all data, its epochs): GPU time.

The global CNN of a table is the same for every row of one data set and
network (the papers print it once per table); we train it in the first such
row only and the report takes it from there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TypedDict

from . import presets
from .errors import InputError, require
from .paper_values import _row as row

# Where to get the data sets that no loader can fetch offline (KLW sec. 4)
DATA_SOURCES = {
    "tf_flowers": "the flower_photos folder from "
    "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz",
    "yale_b": "the CroppedYale folder of the Extended Yale Face Database B "
    "(http://vision.ucsd.edu/~leekc/ExtYaleDatabase/ExtYaleB.html, CroppedYale.zip)",
    "mosmed": "a MosMedData folder with CT-0/ and CT-23/ from https://github.com/hasibzunair/"
    "3D-image-classification-tutorial/releases/tag/v0.2 (CT-0.zip, CT-23.zip)",
    "cifar10": "a cifar-10-batches-py folder (https://www.cs.toronto.edu/~kriz/cifar.html) or a train/ test/ "
    "image tree",
}
NEEDS_DATA_DIR = ("tf_flowers", "yale_b", "mosmed")  # cifar10 falls back to Keras' download


@dataclass(frozen=True)
class Budget:
    """Config overrides for one budget; ``None`` keeps the preset's (paper's) value."""

    name: str
    n_train: int | None = None
    n_val: int | None = None
    epochs: int | None = None
    coarse_epochs: int | None = None
    transfer_pretrain_epochs: int | None = None
    patience: int | None = None
    image_size: tuple[int, ...] | None = None
    note: str = ""

    def overrides(self) -> dict[str, str]:
        """The changed config fields as ``config.resolve`` takes them (strings)."""
        out = {}
        for k, v in asdict(self).items():
            if k in ("name", "note") or v is None:
                continue
            out[k] = ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
        return out

    def describe(self) -> str:
        vals = ", ".join(f"{k}={v}" for k, v in self.overrides().items()) or "the paper's data and epochs"
        return f"budget {self.name}: {vals}" + (f" ({self.note})" if self.note else "")


class _Shared(TypedDict):
    """The Budget fields all data sets of a budget share."""

    epochs: int
    coarse_epochs: int
    transfer_pretrain_epochs: int
    patience: int
    note: str


_SMOKE = _Shared(
    epochs=1,
    coarse_epochs=20,
    transfer_pretrain_epochs=1,
    patience=0,
    note="plumbing check: 1 epoch; accuracies mean little",
)
_CPU = _Shared(
    epochs=5,
    coarse_epochs=30,  # a cap: the coarse net stops early by its own rule (coarse_patience)
    transfer_pretrain_epochs=5,  # the locals' own runs: the transfer reuses them
    patience=0,
    note="about an hour per table on the reference CPU; orderings comparable, values roughly",
)


def _cpu_cifar10(epochs: int) -> Budget:
    """All of CIFAR-10 and ``epochs``, the epochs of this network that fill the hour (``reproduce --estimate``)."""
    return replace(Budget("cpu", **_CPU), epochs=epochs, transfer_pretrain_epochs=epochs)


# Per budget and "dataset/model", else data set, else "*"
BUDGETS: dict[str, dict[str, Budget]] = {
    "smoke": {
        "*": Budget("smoke", n_train=500, n_val=200, **_SMOKE),
        "shapes2d": Budget("smoke", n_train=120, n_val=60, **_SMOKE),
        "shapes3d": Budget("smoke", n_train=24, n_val=12, **_SMOKE),
        "tf_flowers": Budget("smoke", n_train=100, n_val=50, image_size=(90, 90), **_SMOKE),
        "yale_b": Budget("smoke", n_train=200, n_val=100, image_size=(96, 84), **_SMOKE),
        "mosmed": Budget("smoke", n_train=8, n_val=4, image_size=(64, 64, 32), **_SMOKE),
    },
    "cpu": {
        "*": Budget("cpu", n_train=10000, n_val=2000, **_CPU),
        "cifar10/vgg3": _cpu_cifar10(20),
        "cifar10/vgg9": _cpu_cifar10(10),
        "cifar10/resnet20a": _cpu_cifar10(10),  # KLW's ResNet20 (option-A shortcuts)
        "cifar10/resnet20": _cpu_cifar10(10),  # GC's (projection shortcuts)
        "shapes2d": Budget("cpu", **_CPU),
        "shapes3d": Budget("cpu", **_CPU),
        "tf_flowers": Budget("cpu", n_train=1000, n_val=250, image_size=(90, 90), **_CPU),
        "yale_b": Budget("cpu", image_size=(96, 84), **_CPU),
        "mosmed": Budget("cpu", image_size=(64, 64, 32), **_CPU),
    },
    "paper": {"*": Budget("paper", note="the paper's data and epochs (preset values); GPU hours")},
}


def budget(name: str, dataset: str, model: str = "") -> Budget:
    """The budget ``name`` for one data set and network."""
    require(name in BUDGETS, "budget", name, f"one of {', '.join(BUDGETS)}")
    b = BUDGETS[name]
    return b.get(f"{dataset}/{model}", b.get(dataset, b["*"]))


@dataclass(frozen=True)
class Run:
    """One ``full`` configuration: a preset plus the parameters that differ from it."""

    preset: str
    overlap: int | None = None  # None: the preset's
    model: str | None = None
    strategies: tuple[str, ...] = ("cnn_dnn",)
    run_global: bool = True
    row: str = ""  # the paper's row label (paper_values.Entry.row)

    @property
    def dataset(self) -> str:
        return presets.get(self.preset).dataset

    @property
    def net(self) -> str:
        """The row's network: its own ``model`` or the preset's."""
        return self.model or presets.get(self.preset).model

    @property
    def name(self) -> str:
        p = presets.get(self.preset)
        o = p.overlap if self.overlap is None else self.overlap
        return f"{p.dataset}-{self.net}-{p.decomposition}-d{o}"

    def config_overrides(self, b: Budget, data_dir: str = "") -> dict[str, str]:
        """Keyword arguments for ``config.resolve(preset, **...)``."""
        out = dict(b.overrides())
        if self.overlap is not None:
            out["overlap"] = str(self.overlap)
        if self.model:
            out["model"] = self.model
        if data_dir:
            out["data_dir"] = data_dir
        return out


@dataclass(frozen=True)
class Experiment:
    name: str
    paper: str  # paper_values.KLW | TL | GC | "" (no published values)
    table: str
    title: str
    runs: tuple[Run, ...]
    note: str = ""
    datasets: tuple[str, ...] = field(init=False)

    @property
    def label(self) -> str:
        return f"{self.paper} Table {self.table}" if self.paper else "No paper table"

    def __post_init__(self):
        object.__setattr__(self, "datasets", tuple(dict.fromkeys(r.dataset for r in self.runs)))


def _klw(n: str, title: str, names: list[str], rows: list[tuple[str, int]]) -> Experiment:
    """KLW Tables 3-10: one run per row, the global CNN in the first row only."""
    runs = tuple(Run(name, row=_row(dec, o), run_global=i == 0) for i, (name, (dec, o)) in enumerate(zip(names, rows)))
    return Experiment(f"klw-{n}", "KLW", n, title, runs)


def _row(dec: str, o: int) -> str:
    return row(dec, o)


def _cifar(net: str) -> list[str]:
    return [f"cifar10-{net}-2x2", f"cifar10-{net}-2x2-d2", f"cifar10-{net}-2x2-d4"]


def _flowers(net: str) -> list[str]:
    return [f"flowers-{net}-2x2", f"flowers-{net}-3x3", f"flowers-{net}-4x4", f"flowers-{net}-typeB"]


_C, _F = [("2x2", 0), ("2x2", 2), ("2x2", 4)], [("2x2", 0), ("3x3", 0), ("4x4", 0), ("typeB", 0)]
_TL1 = [
    ("cifar10-vgg9-2x2", "2x2"),
    ("flowers-vgg9-2x2", "2x2"),
    ("flowers-vgg9-4x4", "4x4"),
    ("ct-3d-2x2x1", "2x2x1"),
    ("ct-3d-4x4x2", "4x4x2"),
]
_TL2 = [
    ("cifar10-vgg9-2x2", "2x2"),
    ("cifar10-resnet20-2x2", "2x2"),
    ("flowers-vgg9-2x2", "2x2"),
    ("flowers-vgg9-4x4", "4x4"),
    ("flowers-resnet20-2x2", "2x2"),
    ("flowers-resnet20-4x4", "4x4"),
    ("ct-3d-2x2x1", "2x2x1"),
    ("ct-3d-4x4x2", "4x4x2"),
]

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in [
        _klw("3", "CIFAR-10, VGG3, type A 2x2, overlap 0/2/4", _cifar("vgg3"), _C),
        _klw("4", "CIFAR-10, VGG9, type A 2x2, overlap 0/2/4", _cifar("vgg9"), _C),
        _klw("5", "CIFAR-10, ResNet20, type A 2x2, overlap 0/2/4", _cifar("resnet20"), _C),
        _klw("6", "TF-Flowers, VGG3, 2x2 / 3x3 / 4x4 / type B (and Fig. 9 training times)", _flowers("vgg3"), _F),
        _klw("7", "TF-Flowers, VGG9, 2x2 / 3x3 / 4x4 / type B", _flowers("vgg9"), _F),
        _klw("8", "TF-Flowers, ResNet20, 2x2 / 3x3 / 4x4 / type B", _flowers("resnet20"), _F),
        _klw("9", "Extended Yale B, VGG3, 3x3 / 4x4", ["yale-vgg3-3x3", "yale-vgg3-4x4"], [("3x3", 0), ("4x4", 0)]),
        _klw(
            "10",
            "Chest CT, 3D CNN, 2x2x1 / 3x3x1 / 4x4x1 (overlap 0, 4) / 4x4x2 (and Fig. 12 training times)",
            ["ct-3d-2x2x1", "ct-3d-3x3x1", "ct-3d-4x4x1", "ct-3d-4x4x1-d4", "ct-3d-4x4x2"],
            [("2x2x1", 0), ("3x3x1", 0), ("4x4x1", 0), ("4x4x1", 4), ("4x4x2", 0)],
        ),
        Experiment(
            "klw-tl-1",
            "KLW-TL",
            "1",
            "CNN-DNN vs average probability vs majority vote",
            tuple(Run(p, run_global=False, row=_row(d, 0)) for p, d in _TL1),
            note="KLW-TL Table 1 is captioned VGG9, but its CNN-DNN column repeats KLW's VGG3 rows; we "
            "follow the caption (VGG9; 3D CNN for the CT rows).",
        ),
        Experiment(
            "klw-tl-2",
            "KLW-TL",
            "2",
            "global CNN, CNN-DNN, CNN-DNN-coherent, CNN-DNN-transfer",
            tuple(
                Run(
                    p,
                    strategies=("cnn_dnn", "coherent", "transfer"),
                    row=_row(d, 0),
                    run_global=p.split("-")[:2] not in [q.split("-")[:2] for q, _ in _TL2[:i]],
                )
                for i, (p, d) in enumerate(_TL2)
            ),
        ),
        Experiment(
            "gc-3.3",
            "GC",
            "3.3",
            "CIFAR-10, sub-nets, GNet-T, GNet-T-trained, GNet-R-trained; 20x20 and 16x16 sub-images",
            (
                Run(
                    "cifar10-resnet20-2x2",
                    overlap=4,
                    model="resnet20",
                    strategies=("cnn_dnn", "compose"),
                    run_global=False,
                    row="overlap",
                ),
                Run(
                    "cifar10-resnet20-2x2",
                    overlap=0,
                    model="resnet20",
                    strategies=("cnn_dnn", "compose"),
                    run_global=False,
                    row="nonoverlap",
                ),
            ),
            note="Gu et al. use ResNet32/56/110; the package composes ResNet20 (projection shortcuts), "
            "compared here with their ResNet32 column. Their step schedules and flip/shift augmentation "
            "are not used (constant learning rate, x0.1 for the composed net).",
        ),
        Experiment(
            "shapes2d",
            "",
            "",
            "offline demo: shapes2d, VGG3, type A 2x2, overlap 0 / 2 (no published values)",
            (Run("shapes2d-vgg3-2x2", overlap=0), Run("shapes2d-vgg3-2x2", overlap=2, run_global=False)),
        ),
    ]
}


def get(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise InputError("table", name, "one of " + ", ".join(EXPERIMENTS))
    return EXPERIMENTS[name]


def data_dir_for(dataset: str, data_dir: str) -> str:
    """The folder for one data set: ``data_dir`` itself, its sub-folder named after the data set, or the
    entry ``dataset=path`` of a comma-separated list (tables with several data sets)."""
    d = str(data_dir or "").strip()
    if "=" in d:
        pairs = dict(p.split("=", 1) for p in d.split(",") if "=" in p)
        d = pairs.get(dataset, "")
    elif d and (Path(d).expanduser() / dataset).is_dir():
        d = str(Path(d).expanduser() / dataset)
    if dataset in ("shapes2d", "shapes3d"):
        return ""
    if dataset in NEEDS_DATA_DIR:
        require(
            bool(d),
            "data_dir",
            data_dir or None,
            f"{DATA_SOURCES[dataset]} for {dataset} (not downloadable offline); pass data_dir=<that folder>",
        )
    if d:
        require(Path(d).expanduser().is_dir(), "data_dir", d, f"an existing folder: {DATA_SOURCES[dataset]}")
    return d
