"""The registries: each step of the method, and each executor that runs them, declared once.

A ``Step`` names its function lazily (``"pipeline.train:train_local"``, called
as ``fn(cfg, **inputs)``), so reading the registry imports no step module.
The CLI subcommands, the MLproject entry points, ``full``'s chain and the
``strategies`` parameter are all derived from ``STEPS``. Adding a strategy is
one module plus one entry here (then ``ddmlflow mlproject`` rewrites MLproject).

``full`` walks the registry in order: a step's inputs are outputs of earlier
steps; ``training`` steps are handed to the executor together (one child run
each, in parallel), cheap steps run in the parent process.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .errors import InputError, require


@dataclass(frozen=True)
class Input:
    name: str  # parameter name (MLproject, MLflow) and keyword of the step function
    kind: str = "run"  # run | runs (comma-separated) | int | text | runmap (name=id,...) | options (typed)
    required: bool = True
    help: str = ""

    def parse(self, raw: str):
        raw = str(raw).strip()
        if not raw:
            if self.required:
                raise InputError(self.name, raw, f"required: {self.help or 'an MLflow run id'}")
            return {} if self.kind == "runmap" else None if self.kind in ("run", "int") else ""
        if self.kind == "runs":
            return [s.strip() for s in raw.split(",") if s.strip()]
        if self.kind == "int":
            require(raw.isdigit(), self.name, raw, "an integer >= 0")
            return int(raw)
        if self.kind == "runmap":
            pairs = [p.split("=", 1) for p in raw.split(",") if p.strip()]
            if not all(len(p) == 2 and p[0].strip() and p[1].strip() for p in pairs):
                raise InputError(self.name, raw, "comma-separated name=run_id pairs")
            return {k.strip(): v.strip() for k, v in pairs}
        return raw


@dataclass(frozen=True)
class Step:
    name: str  # step name, run name, ``ddmlflow.step`` tag; strategies: the `strategies` name
    func: str  # "module:function" inside ddmlflow, called as fn(cfg, **inputs)
    output: str  # the input name later steps receive this step's run id(s) under
    inputs: tuple[Input, ...] = ()
    training: bool = False  # trained through the executor by ``full`` (else: run in the parent)
    strategy: bool = False  # selectable with ``strategies``
    entry: str = ""  # MLproject entry point name (default: ``name``)
    help: str = ""

    @property
    def entry_point(self) -> str:
        return self.entry or self.name

    @property
    def command(self) -> str:
        """The ``ddmlflow`` subcommand."""
        return self.entry_point.replace("_", "-")

    def function(self):
        module, fn = self.func.split(":")
        return getattr(importlib.import_module(f"ddmlflow.{module}"), fn)

    def run_name(self, inputs: dict) -> str:
        return f"{self.name}/{inputs['box']:02d}" if "box" in inputs else self.name

    def call(self, cfg, **inputs):
        return self.function()(cfg, **inputs)

    def run_into(self, run_id: str, cfg, inputs: dict, tags: dict[str, str] | None = None) -> None:
        """This step in this process, into its existing run (``tags`` set first): FINISHED, or FAILED with
        the reason (re-raised)."""
        import mlflow

        from .devices import process_identity
        from .tracking import retry, step_run  # lazy: MLflow; reading the step registry must not load it

        if trains(self.name):
            tags = {**process_identity(), **(tags or {})}
        with step_run(run_id, system_metrics=trains(self.name)):
            if tags:
                retry(mlflow.set_tags, tags)
            self.call(cfg, **inputs)


_DEC = Input("decompose_run", help="run id of a decompose run")
_LOCALS = Input("local_runs", "runs", help="comma-separated run ids of the local trainings, in box order")
_COARSE = Input("coarse_run", help="run id of the coarse training")

STEPS: dict[str, Step] = {
    s.name: s
    for s in [
        Step(
            "decompose",
            "pipeline.decompose:decompose",
            "decompose_run",
            help="load the data, cut it into boxes, log both once",
        ),
        Step(
            "train_global",
            "pipeline.train:train_global",
            "global_run",
            (_DEC,),
            training=True,
            help="the global CNN on whole images (the baseline)",
        ),
        Step(
            "train_local",
            "pipeline.train:train_local",
            "local_runs",
            (_DEC, Input("box", "int", help="the box index")),
            training=True,
            help="the local CNN of one box",
        ),
        Step(
            "train_coarse",
            "pipeline.coarse:train_coarse",
            "coarse_run",
            (
                _LOCALS,
                Input(
                    "decompose_run",
                    required=False,
                    help="run id of the decompose run (default: the one the first local run names)",
                ),
            ),
            help="the coarse net on the local probabilities",
        ),
        Step(
            "coherent",
            "pipeline.strategies:train_coherent",
            "strategy_runs",
            (_DEC,),
            training=True,
            strategy=True,
            entry="train_coherent",
            help="the CNN-DNN as one model from random weights (KLW-TL)",
        ),
        Step(
            "transfer",
            "pipeline.strategies:transfer",
            "strategy_runs",
            (_DEC, _LOCALS, Input("coarse_run", required=False, help="run id of the coarse training (optional)")),
            training=True,
            strategy=True,
            help="the CNN-DNN as one model from the trained locals, trained further (KLW-TL)",
        ),
        Step(
            "compose",
            "pipeline.strategies:compose_step",
            "strategy_runs",
            (_DEC,),
            training=True,
            strategy=True,
            help="Gu-Cai: sub-networks on the boxes composed into the global net, trained further",
        ),
        Step(
            "evaluate",
            "pipeline.evaluate:evaluate",
            "evaluate_run",
            (
                _DEC,
                _LOCALS,
                _COARSE,
                Input("global_run", required=False, help="run id of the global training"),
                Input("registered_model_name", "text", required=False, help="'-': do not register"),
                Input("strategy_runs", "runmap", required=False, help="name=run_id of further strategies"),
            ),
            help="compare, report, register the CNN-DNN",
        ),
    ]
}

# Steps that only ``tune`` starts (as jobs, through an executor): no subcommand, entry point or place in
# ``full``'s chain. ``search`` is the tuner's settings (``tuning.SearchOptions``).
SEARCHES: dict[str, Step] = {
    s.name: s
    for s in [
        Step(
            "tune_global",
            "pipeline.tune:tune_network",
            "tune_runs",
            (_DEC, Input("search", "options")),
            training=True,
            help="keras-tuner search of the global CNN",
        ),
        Step(
            "tune_local",
            "pipeline.tune:tune_network",
            "tune_runs",
            (_DEC, Input("box", "int", help="the box index"), Input("search", "options")),
            training=True,
            help="keras-tuner search of the local CNN of one box",
        ),
    ]
}


def job_step(name: str) -> Step:
    """The step a job names: one of ``STEPS`` or ``SEARCHES``."""
    return STEPS.get(name) or SEARCHES[name]


# The two-step CNN-DNN of KLW is always trained; the others are chosen with ``strategies``.
STRATEGIES: tuple[str, ...] = ("cnn_dnn", *(s.name for s in STEPS.values() if s.strategy))


def trains(step: str) -> bool:
    """Steps that fit a network get system metrics (the registry's trainings and the coarse net)."""
    s = STEPS.get(step) or SEARCHES.get(step)
    return s is not None and (s.training or s.name.startswith("train_"))


# Every executor, name -> "module:Class" in ``ddmlflow.executors`` (``executors.executor_class``); a class
# builds itself with ``from_options(ExecutorOptions)``. A new executor: its module and one line here. Names
# only, so the schema (``config``) checks ``executor=`` without importing an executor.
EXECUTOR_CLASSES: dict[str, str] = {
    "process": "process:ProcessExecutor",
    "packed": "packed:PackedExecutor",
    "ray": "ray:RayExecutor",
}
EXECUTORS: tuple[str, ...] = ("auto", *EXECUTOR_CLASSES)
