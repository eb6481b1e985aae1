"""The top-level commands: each opens its own parent run and walks the step registry.

``full``, ``tune``, ``reproduce`` and ``report`` sit above the steps and the
executors (they hand trainings to an executor), so they are declared here, not
in ``steps.py``: the registry of steps stays below the executors that run them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..tags import COMMAND_TAG


@dataclass(frozen=True)
class Command:
    """A top-level command that opens its own parent run: ``full`` (and any chain built like it).

    Its options are a dataclass of ``config.option`` fields (``options``, "module:Class"), parsed
    like the run configuration; ``func`` is called as ``fn(cfg, opts)`` (``fn(opts)`` without ``config``).
    """

    name: str
    func: str
    options: str
    config: bool = True
    help: str = ""

    @property
    def command(self) -> str:
        return self.name.replace("_", "-")

    def options_class(self) -> type:
        module, cls = self.options.split(":")
        return getattr(importlib.import_module(f"ddmlflow.{module}"), cls)

    def function(self):
        module, fn = self.func.split(":")
        return getattr(importlib.import_module(f"ddmlflow.{module}"), fn)

    def run(self, cfg, opts, run_id: str = "", track=None):
        """The command in its parent run: ``run_id`` (e.g. made by ``mlflow run``) or a new one, named after
        what it runs, in the chosen experiment (``track``: ``config.TrackingOptions``)."""
        from ..claims import claims  # lazy: MLflow; after prestart (--help reads this registry)
        from ..executors import check, prestart  # lazy: not needed by --help, which reads this registry

        # first of all: the packed workers import TensorFlow (~5-10 s) while this process imports MLflow
        # (~1 s) and opens its run
        started = hasattr(opts, "executor") and prestart(opts)
        try:
            import mlflow

            from .. import describe  # lazy: not needed by --help, which reads this registry
            from ..tracking import open_run, step_run  # lazy: MLflow; after prestart (--help reads this registry)

            if hasattr(opts, "ray_address"):  # before any run or connection: e.g. sqlite with a Ray cluster
                check(opts, mlflow.get_tracking_uri())  # (the ray executor prestarts nothing)
            if cfg is not None:
                tags, experiment = describe.cfg_tags(cfg), describe.experiment_name(cfg)
                name = describe.parent_name(cfg) if self.name == "full" else f"{self.name}-{describe.parent_name(cfg)}"
            else:
                tags, experiment, name = {}, f"ddmlflow-{self.name}", self.name
            exp_name, run_name = (track.experiment_name, track.run_name) if track else ("", "")
            run_id = open_run(
                run_id, exp_name, experiment, run_name or name, self.name, {**tags, COMMAND_TAG: self.name}
            )
            claims().acquire(f"run-{run_id}", self.name, run_id)  # others see this parent is alive
            with step_run(run_id):
                return self.function()(*([cfg] if self.config else []), opts)
        finally:
            claims().release_all()  # what a step left held on an error (and the parent's own)
            if started:
                from ..executors.packed import stop_spares  # lazy: an executor only when used

                stop_spares()


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in [
        Command("full", "commands.full:full", "config:FullOptions", help="every step under one parent run"),
        Command(
            "tune",
            "commands.tune:run_tune",
            "config:TuneOptions",
            help="keras-tuner search: the locals in parallel, then the coarse net (KLW sec. 4)",
        ),
        Command(
            "reproduce",
            "commands.reproduce:run_reproduce",
            "config:ReproduceOptions",
            config=False,
            help="every configuration of a paper table, then the report beside the paper's values",
        ),
        Command(
            "report",
            "commands.report:run_report",
            "config:ReportOptions",
            config=False,
            help="report.md / report.html of an experiment's runs, beside the paper's values",
        ),
    ]
}
