"""Hyperparameter search (KLW sec. 4) with keras-tuner, every trial a nested MLflow run.

KLW grid-searched batch size, initial learning rate and dropout rate on the
global CNN, and the coarse net's layers with a Bayesian search (Table 1). A
search here runs in the active MLflow run of one network (``tune_global``,
``tune_local/NN``, ``tune_coarse``); each keras-tuner trial becomes a child run
holding the trial's hyperparameters, per-epoch curves, the objective, its
training time and the FLOPs it spent.

keras-tuner's project folder lives in the work folder keyed by that run and is
opened with ``overwrite=False``: a killed search reloads its oracle, skips the
finished trials and retries the one that was running, whose own epochs resume
from a per-execution ``BackupAndRestore`` checkpoint. Trial ids map to MLflow
runs by a tag, so a resumed trial continues its run instead of adding one.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import mlflow
from mlflow.tracking import MlflowClient

from . import profiling
from .console import keras_verbose
from .errors import require
from .search_space import declare, int_values, load_space
from .tags import BEST_TAG, PARENT_TAG, REASON_TAG, RUN_NAME_TAG, STEP_TAG, TRIAL_STATUS_TAG, TRIAL_TAG
from .tracking import retry, step_run, work_dir
from .training import EPOCH_METRICS, EpochLog, FitConfig, compile_model, epoch_logger, fit, seed_everything

TUNERS = ("grid", "random", "bayesian", "hyperband")
OBJECTIVES = EPOCH_METRICS  # what a search may optimise: what every training logs


class TuneFailed(RuntimeError):
    """Every trial of a search failed; the message carries the first trial's reason."""


@dataclass(frozen=True)
class SearchOptions:
    """The tuner's settings, from the ``tune`` command's options (``config.TuneOptions``) by ``of``."""

    tuner: str = "random"
    max_trials: int = 10
    executions_per_trial: int = 1
    epochs: int | None = None  # None: the preset's (epochs for CNNs, coarse_epochs for the coarse net)
    objective: str = "val_accuracy"
    space: dict = field(default_factory=dict)  # {"cnn": {...}, "coarse": {...}} as parsed by ``load_space``

    @classmethod
    def of(cls, opts, epochs: int | None = None) -> SearchOptions:
        """From ``config.TuneOptions`` (its counts checked there); the tuner, the objective and the space
        file are checked here, once, with one ``InputError`` line each."""
        tuner = opts.tuner.strip().lower()
        require(tuner in TUNERS, "tuner", opts.tuner, f"one of {', '.join(TUNERS)}")
        objective = opts.objective.strip() or "val_accuracy"
        require(objective in OBJECTIVES, "objective", objective, f"one of {', '.join(OBJECTIVES)}")
        require(epochs is None or epochs >= 1, "epochs", str(epochs), "an integer >= 1")
        return cls(
            tuner,
            opts.max_trials,
            opts.executions_per_trial,
            epochs,
            objective,
            load_space(opts.space) if opts.space else {},
        )

    def key(self) -> dict:
        """As strings, for step keys and MLflow params."""
        return {
            "tuner": self.tuner,
            "max_trials": self.max_trials,
            "executions_per_trial": self.executions_per_trial,
            "tune_epochs": "" if self.epochs is None else self.epochs,
            "objective": self.objective,
            "space": json.dumps(self.space, sort_keys=True) if self.space else "",
        }


# --- the hypermodel: build, compile, fit with the trial's values ----------------------------------------------


class NetworkHyperModel(kt.HyperModel):
    """Builds and fits one network with a trial's values; what the space does not name stays ``fixed``.

    ``fit`` is overridden (keras-tuner allows it) so the batch size is a
    hyperparameter too, and so a trial trains as the plain training does (``training.fit``),
    with MLflow epoch curves per trial.
    """

    def __init__(
        self,
        kind: str,
        space: dict,
        fixed: dict,
        builder: Callable[[dict], keras.Model],
        num_classes: int,
        fit_cfg: FitConfig,
        augmented: Callable[[FitConfig], Any] | None = None,
        init_seed: int | None = None,
    ):
        super().__init__(name=kind)
        self.kind, self.space, self.fixed, self.builder = kind, space, fixed, builder
        self.num_classes, self.fit_cfg = num_classes, fit_cfg
        self.augmented = augmented  # a trial's augmented batches (whole images, then cropped), as the training's
        # the weights' seed of execution 0 (then + execution): a trial's net starts as the plain training's does
        self.init_seed = init_seed
        self.project_dir = Path(".")  # set by ``search``: keras-tuner's folder of this run
        self.trial: tuple[str, str] = ("", "")  # (keras-tuner trial id, MLflow run id), set per trial
        self.executions: list[dict] = []

    def values(self, hp: kt.HyperParameters) -> dict:
        """The trial's values in the package's terms (``hidden`` as a list of widths)."""
        v = {}
        for name, spec in self.space.items():
            if name not in ("units", "hidden_layers"):
                v[name] = declare(hp, name, spec)
        if "hidden_layers" in self.space:
            n = declare(hp, "hidden_layers", self.space["hidden_layers"])
            units_spec = self.space.get("units", {"type": "fixed", "value": 64})
            widths = []
            for i in range(1, max(int_values(self.space["hidden_layers"])) + 1):
                active = [k for k in int_values(self.space["hidden_layers"]) if k >= i]
                with hp.conditional_scope("hidden_layers", active):
                    u = declare(hp, f"units_{i}", units_spec)
                if i <= n:
                    widths.append(int(u))
            v["hidden"] = widths
        elif isinstance(v.get("hidden"), str):
            v["hidden"] = [int(u) for u in v["hidden"].split(",")]
        return v

    def build(self, hp):
        v = {**self.fixed, **self.values(hp)}
        if self.init_seed is not None:  # keras-tuner's clear_session between trials resets Keras' generator
            seed_everything(self.init_seed + len(self.executions))
        model = self.builder(v)
        fc = dataclasses.replace(self.fit_cfg, learning_rate=float(v["learning_rate"]), optimizer=v["optimizer"])
        return compile_model(model, self.num_classes, fc)

    def fit(self, hp, model, x, y, validation_data=None, epochs=1, callbacks=(), initial_epoch=0, **kwargs):
        """One trial's training through the engine every training uses (``training.fit``): the batch source,
        early stopping that restores the best epoch, a checkpoint with its state (a killed trial resumes
        after its last finished epoch); keras-tuner reads the returned History."""
        v = {**self.fixed, **self.values(hp)}
        execution = len(self.executions)
        trial_id, run_id = self.trial
        fc = dataclasses.replace(
            self.fit_cfg,
            epochs=epochs,
            batch_size=int(v["batch_size"]),
            learning_rate=float(v["learning_rate"]),
            optimizer=v["optimizer"],
        )
        train = self.augmented(fc) if self.augmented is not None and fc.augment else x
        record = keras.callbacks.History()
        t0 = time.perf_counter()
        fit(
            model,
            (train, y, *validation_data),
            self.num_classes,
            fc,
            checkpoint_dir=self.project_dir / f"trial_{trial_id}" / f"backup_{execution}",
            log_to_mlflow=False,
            callbacks=[*callbacks, record, EpochLog(epoch_logger([run_id], f"/exec{execution}" if execution else ""))],
            initial_epoch=initial_epoch,
        )
        self.executions.append(
            {
                "time_s": time.perf_counter() - t0,
                "epochs": len(record.epoch),
                "flops_per_sample": profiling.flops_exact(model),
                "samples": len(x),
            }
        )
        return record


class _Tracked:
    """Mixin for a keras-tuner tuner: each trial a nested MLflow run under the active (network) run."""

    runs: dict[str, str]  # trial id -> its MLflow run id (make_tuner sets it)

    def run_trial(self, trial, *args, **kwargs):
        run_id = self.trial_run(trial.trial_id)
        self.hypermodel.trial, self.hypermodel.executions = (trial.trial_id, run_id), []
        with step_run(run_id):
            hps = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}
            have = retry(MlflowClient().get_run, run_id).data.params
            retry(mlflow.log_params, {k: str(v) for k, v in hps.items() if k not in have})
            results = super().run_trial(trial, *args, **kwargs)
            ex = self.hypermodel.executions
            retry(
                mlflow.log_metrics,
                {
                    "train_time_s": sum(e["time_s"] for e in ex),
                    "epochs_run": sum(e["epochs"] for e in ex),
                    "flops_per_sample": ex[0]["flops_per_sample"],
                    "flops_spent": sum(e["flops_per_sample"] * e["samples"] * e["epochs"] for e in ex),
                },
            )
            return results

    def on_trial_end(self, trial):
        super().on_trial_end(trial)  # the oracle scores the trial here
        t = self.oracle.get_trial(trial.trial_id)
        run_id, client = self.trial_run(trial.trial_id), MlflowClient()
        retry(client.set_tag, run_id, TRIAL_STATUS_TAG, t.status)
        if t.status == "COMPLETED" and t.score is not None:
            retry(client.log_metric, run_id, "objective", float(t.score))
        elif t.message:
            retry(client.set_tag, run_id, REASON_TAG, reason(t.message))

    def trial_run(self, trial_id: str) -> str:
        """The MLflow run of a keras-tuner trial: found by tag (resumed search) or created."""
        if trial_id in self.runs:
            return self.runs[trial_id]
        parent = mlflow.active_run().info
        client = MlflowClient()
        found = retry(
            client.search_runs,
            [parent.experiment_id],
            f"tags.`{PARENT_TAG}` = '{parent.run_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'",
        )
        self.runs[trial_id] = (
            found[0].info.run_id
            if found
            else retry(
                client.create_run,
                parent.experiment_id,
                tags={
                    RUN_NAME_TAG: f"trial_{trial_id}",
                    PARENT_TAG: parent.run_id,
                    TRIAL_TAG: trial_id,
                    STEP_TAG: "tune_trial",
                },
            ).info.run_id
        )
        return self.runs[trial_id]


_CLASSES = {
    "grid": kt.GridSearch,
    "random": kt.RandomSearch,
    "bayesian": kt.BayesianOptimization,
    "hyperband": kt.Hyperband,
}


def make_tuner(opts: SearchOptions, hypermodel: NetworkHyperModel, project_dir: Path, seed: int, epochs: int):
    """keras-tuner's tuner of that name, tracked, resuming from ``project_dir`` (``overwrite=False``)."""
    cls = type(f"Tracked{_CLASSES[opts.tuner].__name__}", (_Tracked, _CLASSES[opts.tuner]), {})
    kw = {"max_epochs": epochs} if opts.tuner == "hyperband" else {"max_trials": opts.max_trials}
    tuner = cls(
        hypermodel=hypermodel,
        objective=opts.objective,
        seed=seed,
        overwrite=False,
        executions_per_trial=opts.executions_per_trial,
        directory=str(project_dir.parent),
        project_name=project_dir.name,
        **kw,
    )
    tuner.runs = {}
    return tuner


def reason(message: str) -> str:
    """The last line of a trial's traceback: what went wrong."""
    lines = [ln for ln in (message or "").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "unknown reason"


def search(opts: SearchOptions, hypermodel: NetworkHyperModel, data: tuple, epochs: int, seed: int) -> dict:
    """Run (or resume) a search in the active run; returns the best trial's values, its model and the costs."""
    run = mlflow.active_run().info
    project_dir = work_dir("tuner", run.run_id) / "project"
    hypermodel.project_dir = project_dir
    tuner = make_tuner(opts, hypermodel, project_dir, seed, epochs)
    x, y, xv, yv = data
    try:
        tuner.search(x, y, validation_data=(xv, yv), epochs=epochs, verbose=keras_verbose())
    except RuntimeError as e:  # keras-tuner stops after consecutive failures; report the first reason below
        if "consecutive failures" not in str(e):
            raise
    trials = [tuner.oracle.trials[t] for t in sorted(tuner.oracle.trials, key=lambda t: int(t))]
    done = [t for t in trials if t.status == "COMPLETED"]
    if not done:
        first = next((t for t in trials if t.message), None)
        raise TuneFailed(
            f"all {len(trials)} trials failed; first (trial {first.trial_id if first else '?'}): "
            f"{reason(first.message) if first else 'no trial ran'}"
        )
    best = tuner.oracle.get_best_trials(1)[0]
    best_run = tuner.trial_run(best.trial_id)
    retry(MlflowClient().set_tag, best_run, BEST_TAG, "true")
    client = MlflowClient()
    spent = [retry(client.get_run, tuner.trial_run(t.trial_id)).data.metrics for t in trials]
    with warnings.catch_warnings():  # the best epoch's checkpoint holds optimizer state we do not need
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model = tuner.load_model(best)
    return {
        "best_values": hypermodel.values(best.hyperparameters.copy()),
        "best_trial": best.trial_id,
        "best_run": best_run,
        "best_score": float(best.score),
        "model": model,
        "trials_completed": len(done),
        "trials_failed": len(trials) - len(done),
        "flops_spent": sum(m.get("flops_spent", 0.0) for m in spent),
        "time_s": sum(m.get("train_time_s", 0.0) for m in spent),
        "epochs_run": sum(m.get("epochs_run", 0.0) for m in spent),
    }
