"""The run configuration, declared once: every option is a dataclass field with its parser and help.

``RunConfig`` (what every step needs) and ``FullOptions`` (how ``full`` runs)
are the only declarations. The CLI options (``add_options``), the MLflow params
(``params``) and the MLproject parameter blocks (``ddmlflow mlproject``) are all
derived from these fields. A typed config crosses into a worker process (process,
packed, Ray, tuner) one way: ``to_json`` once, ``from_json`` there, with a schema
version (no re-parsing).
Every front end passes strings; ``resolve`` turns them into one typed config
and rejects a bad value with an ``InputError`` before any data is loaded.
An empty string means "take it from the preset", so ``-P epochs=2`` overrides
one field and keeps the rest of the paper's configuration.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from . import experiments, presets
from .errors import InputError, require
from .parsers import (
    Parser,
    boolean,
    choice,
    choices,
    decomposition_spec,
    gpu_list,
    integer,
    integers,
    number,
    optional,
    registry_names,
    run_ids,
    text,
)
from .steps import EXECUTORS, STRATEGIES

if TYPE_CHECKING:
    import argparse

_Options = TypeVar("_Options")

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


# -- the schema -----------------------------------------------------------------------------------


def option(parse: Parser, help: str, default: str | None = None, param: str | None = None, key: bool = True) -> Any:
    """A config field: ``default=None`` takes the value from the preset's field of the same name.

    ``key=False``: the value does not change a result (how or where it runs; a path whose content
    is hashed instead), so it is in no step key (``key_params``)."""
    return field(metadata={"parse": parse, "help": help, "default": default, "param": param, "key": key})


def spec(f: dataclasses.Field[Any]) -> dict[str, Any]:
    return {**f.metadata, "param": f.metadata["param"] or f.name}


# Keras' dtype policies a training may run under (``training.set_precision``): variables stay float32.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def require_gpu_for(precision: str, gpus: Iterable[str], remote: bool = False) -> None:
    """``mixed_float16`` only where trainings get a GPU (or a Ray cluster's nodes may have one): a CPU runs
    float16 emulated, slower than float32. Commands check before any training; the engine checks again."""
    require(
        precision != "mixed_float16" or bool(tuple(gpus)) or remote,
        "precision",
        precision,
        "float32 or mixed_bfloat16 without a GPU (a CPU runs float16 emulated, slower than float32)",
    )


@dataclass(frozen=True)
class RunConfig:
    """Everything a step needs; ``params()`` is what goes to MLflow (as strings)."""

    preset: str = option(text, "named paper configuration (see `ddmlflow presets`)", default="")
    dataset: str = option(choice(registry_names("data", "DATASETS")), "data set (default: the preset's)")
    data_dir: str = option(text, "folder of the data set (needed offline for real data)", default="", key=False)
    model: str = option(choice(registry_names("models", "MODELS")), "network")
    decomposition: str = option(decomposition_spec, "PxP, PxPxQ, typeB, JSON boxes (text or .json file)")
    overlap: int = option(integer(0), "pixels each box grows towards its neighbours (delta)")
    width_divisor: int = option(integer(1), "local nets divide every width by this")
    epochs: int = option(integer(1), "epochs of the global and local nets")
    batch_size: int = option(integer(1), "batch size of the global and local nets")
    learning_rate: float = option(number(0.0, 1.0), "initial learning rate")
    optimizer: str = option(choice(registry_names("optimizers", "OPTIMIZERS"), lower=True), "optimizer")
    patience: int = option(integer(0), "early-stopping patience on val_accuracy (0: none)")
    dropout: float | None = option(
        optional(number(0.0, 0.99, lo_open=False)), "dropout rate of the CNNs (empty: the network's own)", default=""
    )
    coarse_hidden: tuple[int, ...] = option(integers, "hidden layer sizes of the coarse net, e.g. 128,64,32")
    coarse_dropout: float = option(number(0.0, 0.99, lo_open=False), "dropout rate of the coarse net")
    coarse_epochs: int = option(integer(1), "epochs of the coarse net")
    coarse_batch_size: int = option(integer(1), "batch size of the coarse net")
    coarse_learning_rate: float = option(number(0.0, 1.0), "learning rate of the coarse net")
    coarse_patience: int = option(integer(0), "the coarse net's early stopping on held-out training data (0: none)")
    transfer_coarse: bool = option(boolean, "transfer: also transfer the trained coarse net (false: locals only)")
    transfer_pretrain_epochs: int = option(
        integer(1),
        "transfer: epochs the locals are trained before they are transferred (KLW-TL: 150); "
        "other than epochs: locals of their own (pretrain_local/NN)",
    )
    compose_lr_schedule: str = option(
        choice(lambda: tuple(presets.COMPOSE_LR_SCHEDULES)), "compose: Gu et al.'s step schedules, or constant"
    )
    seed: int = option(integer(0), "random seed (local k uses seed + 1 + k)", default="0")
    precision: str = option(
        choice(lambda: PRECISIONS),
        "compute dtype of every training (Keras mixed precision; mixed_float16 needs a GPU); "
        "weights, probabilities and the logged models stay float32",
        default="float32",
    )
    image_size: tuple[int, ...] | None = option(optional(integers), "resize images to HxW (or HxWxD)", default="")
    n_train: int | None = option(optional(integer(1)), "use the first N training samples", default="")
    n_val: int | None = option(optional(integer(1)), "use the first N validation samples", default="")

    def params(self) -> dict[str, str]:
        return {spec(f)["param"]: _value(self, f) for f in dataclasses.fields(self)}

    @property
    def pretrains_apart(self) -> bool:
        """KLW-TL: the transfer starts from locals trained ``transfer_pretrain_epochs``; when that is not
        ``epochs`` they are runs of their own (``pretrain_local/NN``), else the ``train_local`` runs."""
        return self.transfer_pretrain_epochs != self.epochs

    def data_args(self) -> dict[str, Any]:
        """Arguments for ``ddmlflow.data.load``."""
        return dict(
            name=self.dataset,
            data_dir=self.data_dir or None,
            seed=self.seed,
            image_size=self.image_size,
            n_train=self.n_train,
            n_val=self.n_val,
        )


@dataclass(frozen=True)
class FullOptions:
    """How ``full`` runs the steps (not part of any step's key)."""

    run_global: bool = option(boolean, "also train the global CNN (the baseline)", default="true", param="global")
    executor: str = option(
        choice(lambda: EXECUTORS),
        "how trainings run: auto, process (one process each), packed (one program per device), ray (one Ray task each)",
        default="auto",
        key=False,
    )
    gpus: tuple[str, ...] = option(gpu_list, "auto, none, or GPU indices like 0,1,2,3", default="auto", key=False)
    jobs_per_gpu: int = option(integer(1), "trainings at once on one GPU", default="1", key=False)
    max_parallel: int = option(integer(1), "trainings at once without GPUs", default="1", key=False)
    ray_address: str = option(
        text,
        "executor=ray: empty = a local Ray instance, auto = the running cluster, ray://host:port = Ray Client",
        default="",
        key=False,
    )
    force: bool = option(boolean, "retrain everything (no reuse of finished steps)", default="false", key=False)
    registered_model_name: str = option(text, "registered model name ('-': do not register)", default="")
    strategies: tuple[str, ...] = option(
        choices(lambda: STRATEGIES), "cnn_dnn plus any of coherent, transfer, compose", default="cnn_dnn"
    )
    hparams: str = option(
        text,
        "tuned values: a tune run id or a best_hparams.json file (the values reach the steps' keys, not the name)",
        default="",
        key=False,
    )

    def params(self) -> dict[str, str]:
        return {spec(f)["param"]: _value(self, f) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class TrackingOptions:
    """Where a run is logged and what it is called: every entry point has them, no step key has."""

    experiment_name: str = option(
        text,
        "MLflow experiment (default: MLFLOW_EXPERIMENT_NAME/_ID, else "
        "ddmlflow-<dataset>; a run made by `mlflow run --experiment-name` keeps its own)",
        default="",
    )
    run_name: str = option(
        text, "name of the run (default: what it is, e.g. shapes2d-vgg3-2x2-d2 for full)", default=""
    )
    verbose: bool = option(
        boolean,
        "show everything: TensorFlow's and MLflow's logs, Keras' epoch lines (default: our progress lines only)",
        default="false",
    )

    def params(self) -> dict[str, str]:
        return {spec(f)["param"]: _value(self, f) for f in dataclasses.fields(self)}


def key_params(obj: Any) -> dict[str, str]:
    """The fields of a config or options dataclass that change a result, as strings (see ``option``)."""
    return {spec(f)["param"]: _value(obj, f) for f in dataclasses.fields(obj) if f.metadata["key"]}


def _value(obj: Any, f: dataclasses.Field[Any]) -> str:
    """A field as logged: the value used (no GPU found or asked for: ``none``, not empty)."""
    v = getattr(obj, f.name)
    return "none" if f.metadata["parse"] is gpu_list and not v else _to_str(v)


def _to_str(v: Any) -> str:
    if isinstance(v, tuple):
        return ",".join(map(str, v))
    if isinstance(v, bool):
        return str(v).lower()
    return "" if v is None else str(v)


def options(cls: type = RunConfig) -> list[dict[str, Any]]:
    """The declared options of ``cls``: param name, parser, help, default (None: from the preset)."""
    return [{"field": f.name, **spec(f)} for f in dataclasses.fields(cls)]


def add_options(parser: argparse.ArgumentParser, cls: type = RunConfig) -> None:
    """argparse options ``--param-name`` for every field of ``cls`` (all strings, checked by ``resolve``)."""
    for o in options(cls):
        default = o["default"] if o["default"] is not None else ""
        # `--force` = `--force true`
        flag: dict[str, Any] = {"nargs": "?", "const": "true"} if o["parse"] is boolean else {}
        parser.add_argument(
            f"--{o['param'].replace('_', '-')}", dest=o["field"], default=default, help=o["help"], **flag
        )


# The version of ``to_json``'s layout and of the fields' meaning: raise it when a field is renamed or
# changes meaning, so a worker of another version refuses the config instead of misreading it.
SCHEMA_VERSION = 1


def to_json(obj: Any) -> str:
    """A typed config (``RunConfig`` or an options dataclass) for a worker process: its typed values."""
    return json.dumps(
        {"schema": SCHEMA_VERSION, "type": type(obj).__name__, "values": dataclasses.asdict(obj)}, sort_keys=True
    )


def from_json(text: str, cls: type | None = None) -> Any:
    """``to_json``'s object back, as it was (validated when it was made; tuples restored)."""
    d = json.loads(text)
    classes = {
        c.__name__: c for c in (RunConfig, FullOptions, TuneOptions, ReproduceOptions, ReportOptions, TrackingOptions)
    }
    cls = cls or classes.get(d.get("type"))
    require(
        d.get("schema") == SCHEMA_VERSION and cls is not None and d.get("type") == cls.__name__,
        "config",
        f"schema {d.get('schema')} {d.get('type')}",
        f"a config of schema {SCHEMA_VERSION}, as this ddmlflow "
        "writes it (the worker and the command that started it must be the same version)",
    )
    assert cls is not None  # required just above
    values = {
        f.name: tuple(v) if isinstance(v, list) and "tuple" in str(f.type) else v
        for f in dataclasses.fields(cls)
        for v in [d["values"][f.name]]
    }
    return cls(**values)


def parse_options(cls: type[_Options], **given: Any) -> _Options:
    """An options dataclass without a preset (e.g. ``FullOptions``) from strings; unknown names rejected."""
    known = {o["field"]: o for o in options(cls)} | {o["param"]: o for o in options(cls)}
    _refuse_unknown(set(given) - set(known), known)
    values = {}
    for o in options(cls):
        raw = given.get(o["field"], given.get(o["param"]))
        raw = o["default"] if raw is None or str(raw).strip() == "" else raw
        values[o["field"]] = o["parse"](o["param"], raw)
    return cls(**values)


def _refuse_unknown(unknown: set[str], known: Iterable[str]) -> None:
    """One line naming the first unknown parameter and the nearest known one (no prefix matching)."""
    if unknown:
        import difflib

        name = sorted(unknown)[0]
        near = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
        raise InputError(name, "", "not a parameter of this step" + (f"; did you mean {near[0]}?" if near else ""))


def resolve(preset: str = "", **overrides: Any) -> RunConfig:
    """Preset values, overridden by every non-empty parameter; all checked here."""
    given = {k: str(v).strip() for k, v in overrides.items() if v is not None and str(v).strip() != ""}
    opts = {o["field"]: o for o in options(RunConfig)}
    _refuse_unknown(set(given) - set(opts), opts)
    dataset = opts["dataset"]["parse"]("dataset", given["dataset"]) if "dataset" in given else ""
    p = presets.get(preset.strip() or DEFAULT_PRESET[dataset or "shapes2d"])
    values: dict[str, Any] = {"preset": p.name}
    for name, o in opts.items():
        if name == "preset":
            continue
        raw = given.get(name)
        if raw is None:
            raw = o["default"] if o["default"] is not None else _to_str(getattr(p, name))
        values[name] = o["parse"](name, raw)
    cfg = RunConfig(**values)
    require(
        cfg.dataset != "folder" or bool(cfg.data_dir),
        "data_dir",
        cfg.data_dir,
        "a folder of class subfolders (dataset=folder needs one)",
    )
    return cfg


@dataclass(frozen=True)
class TuneOptions:
    """How ``tune`` searches (KLW sec. 4); its epochs are the config's ``epochs`` / ``coarse_epochs``."""

    target: str = option(
        choice(lambda: ("global", "locals", "coarse", "all")),
        "what to tune: global, locals, coarse, all (locals, then coarse)",
        default="all",
    )
    tuner: str = option(text, "grid, random, bayesian or hyperband (keras-tuner)", default="random")
    max_trials: int = option(integer(1), "trials per network", default="10")
    executions_per_trial: int = option(integer(1), "trainings per trial (averaged)", default="1")
    objective: str = option(text, "val_accuracy, val_loss, accuracy or loss", default="val_accuracy")
    space: str = option(text, "a JSON or YAML search space (empty: KLW's, around the preset)", default="")
    local_runs: tuple[str, ...] = option(
        run_ids, "local runs whose probabilities target=coarse uses (comma-separated run ids)", default=""
    )
    gpus: tuple[str, ...] = option(gpu_list, "auto, none, or GPU indices like 0,1,2,3", default="auto")
    jobs_per_gpu: int = option(integer(1), "searches at once on one GPU", default="1")
    max_parallel: int = option(integer(1), "searches at once without GPUs", default="1")
    force: bool = option(boolean, "search anew (no reuse of finished searches)", default="false")


def same_as(cls: type, name: str) -> Any:
    """Another options class's field, declared once there (parser, help, default)."""
    return {f.name: f for f in dataclasses.fields(cls)}[name]


@dataclass(frozen=True)
class ReproduceOptions:
    """Which paper table to reproduce (``ddmlflow.experiments``) and at which budget."""

    table: str = option(
        choice(lambda: tuple(experiments.EXPERIMENTS)), "a paper table, e.g. klw-3, klw-tl-2, gc-3.3", default="klw-3"
    )
    budget: str = option(
        choice(lambda: tuple(experiments.BUDGETS)),
        "smoke (tiny, 1 epoch), cpu (about an hour), paper (the paper's data and epochs)",
        default="smoke",
    )
    data_dir: str = option(text, "data folder (or a folder of <dataset>/ folders)", default="")
    datasets: tuple[str, ...] | None = option(
        optional(choices(registry_names("data", "DATASETS"))),
        "only the table's rows of these data sets, e.g. cifar10 (empty: every row)",
        default="",
    )
    estimate: bool = option(
        boolean,
        "print each configuration's expected time on this machine (its nets timed briefly here); train nothing",
        default="false",
        key=False,
    )
    executor: str = same_as(FullOptions, "executor")
    gpus: tuple[str, ...] = same_as(FullOptions, "gpus")
    jobs_per_gpu: int = same_as(FullOptions, "jobs_per_gpu")
    max_parallel: int = same_as(FullOptions, "max_parallel")
    force: bool = same_as(FullOptions, "force")
    ray_address: str = same_as(FullOptions, "ray_address")


@dataclass(frozen=True)
class ReportOptions:
    """What to report: an experiment's ``full`` runs, or one ``reproduce`` run."""

    experiment: str = option(text, "experiment name or id (every finished full run in it)", default="")
    reproduce_run: str = option(text, "a reproduce run id (its rows)", default="")
    out_dir: str = option(text, "where report.md / report.html go", default="report")
