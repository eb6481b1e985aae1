"""``full``: every step of the registry under one parent run.

The chain is ``steps.STEPS`` in order: decompose, then the trainings (global
and the N locals) handed to the executor together, the coarse net, the
chosen strategies (through the executor too), evaluate. Each step's run comes
from the one reuse rule (``reuse.Reuse``: content-addressed key, claim): a
FINISHED run with the same key is reused, an unfinished one (killed, failed)
is resumed in place from its last finished epoch, a step another live
process trains is waited for, ``force=True`` trains anew. Cheap steps run in this
process; calling the step functions in-process, rather than ``mlflow.run``
per step, saves a process start and a TensorFlow import per step and lets us
pin devices and pass parent ids.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import mlflow

from .. import describe, devices, environment, preload, progress
from ..config import FullOptions, RunConfig, require_gpu_for
from ..errors import require
from ..executors import Executor, Job, Result, choose, open_executor, prestart
from ..executors.packed import stop_spares, store_ready
from ..hparams import apply_hparams, load_hparams
from ..results import Decomposed, Evaluation
from ..reuse import Reuse
from ..steps import STEPS, Step
from ..tags import DEVICE_TAG, EXECUTOR_TAG, GROUP_TAG, NOTE_TAG, REUSED_TAG, run_tag
from ..tracking import end_run, log_params, retry, say, train_log, ui_link
from . import COMMANDS


class StepsFailed(RuntimeError):
    """Some trainings failed; the message names them and how to resume."""


def tuned(cfg: RunConfig, hparams, step: Step, inputs: dict) -> tuple[RunConfig, dict]:
    """The config of one run with the tuned values of its network (``hparams``), and provenance tags."""
    network = {
        "train_global": "global",
        "train_local": f"local/{inputs.get('box', 0):02d}",
        "train_coarse": "coarse",
    }.get(step.name)
    if hparams is None or network is None:
        return cfg, {}
    return apply_hparams(cfg, hparams, network)


def _instances(step: Step, have: dict, n_boxes: int) -> list[dict]:
    """The inputs of each run of ``step``: one per box for per-box steps, else one."""
    base = {i.name: have.get(i.name) for i in step.inputs if i.name != "box"}
    if any(i.name == "box" for i in step.inputs):
        return [{**base, "box": b} for b in range(n_boxes)]
    return [base]


def _schedule(steps: Reuse, batch: list[Job], step: Step, name: str, inputs: dict, cfg: RunConfig, tags) -> str:
    """The run of a training step: reused when finished (same key), else a job added to ``batch``."""
    run_id, done = steps.get(step.name, name, inputs, cfg, tags)
    if not done:
        batch.append(Job(step.name, name, run_id, inputs, cfg, log=train_log(run_id)))
    return run_id


def _pretrains(cfg: RunConfig, opts: FullOptions) -> bool:
    """``pretrain_local/NN`` runs for the transfer (``RunConfig.pretrains_apart``): the same step as
    ``train_local``, so finished ones with the same key are reused."""
    return "transfer" in opts.strategies and cfg.pretrains_apart


def _selected(step: Step, opts: FullOptions) -> bool:
    if step.strategy:
        return step.name in opts.strategies
    return step.name != "train_global" or opts.run_global


def full(cfg: RunConfig, opts: FullOptions) -> dict:
    """In the active (parent) run: every step, then a summary; raises ``StepsFailed``."""
    t0 = time.time()
    require_gpu_for(cfg.precision, opts.gpus, remote=bool(opts.ray_address))
    if prestart(opts):  # for devices without a spare: the command started them before opening this run
        store_ready()  # the store exists now: they may connect
    try:
        return _full(cfg, opts, t0)
    finally:
        stop_spares()


def _full(cfg: RunConfig, opts: FullOptions, t0: float) -> dict:
    parent = mlflow.active_run()
    exp = parent.info.experiment_id
    log_params({**cfg.params(), **opts.params()})
    log_environment()
    require(
        not (_pretrains(cfg, opts) and cfg.transfer_coarse),
        "transfer_coarse",
        "true",
        "false when transfer_pretrain_epochs differs from epochs (the coarse net learns the locals of `epochs`)",
    )
    # the command's claims end with it, whatever happens
    with Reuse(cfg, parent.info.run_id, exp, opts.force) as steps:
        hparams = load_hparams(opts.hparams) if opts.hparams else None
        have: dict = {"registered_model_name": opts.registered_model_name, "strategy_runs": {}}
        runs: dict[str, str] = {}
        outputs: dict = {}  # what the steps run here returned (None: reused, read from its run)
        batch: list[Job] = []
        n_boxes = 0
        for step in STEPS.values():
            if not _selected(step, opts):
                continue
            if not step.training:
                _train_all(batch, opts, steps)
                batch = []
            for inputs in _instances(step, have, n_boxes):
                if step.name == "transfer" and "pretrain_runs" in have:
                    inputs = {**inputs, "local_runs": have["pretrain_runs"]}
                name = step.run_name(inputs)
                step_cfg, tags = tuned(cfg, hparams, step, inputs)
                if step.training:
                    run_id = _schedule(steps, batch, step, name, inputs, step_cfg, tags)
                    if step.name == "train_local" and _pretrains(cfg, opts):  # KLW-TL: longer-trained locals
                        pre = f"pretrain_local/{inputs['box']:02d}"
                        pre_cfg = dataclasses.replace(step_cfg, epochs=cfg.transfer_pretrain_epochs)
                        runs[pre] = _schedule(steps, batch, step, pre, inputs, pre_cfg, tags)
                        have.setdefault("pretrain_runs", []).append(runs[pre])
                else:
                    run_id, outputs[step.name] = steps.inline_result(
                        step.name,
                        name,
                        inputs,
                        step.call,
                        step_cfg,
                        watch=progress.epochs_of(step.name, step_cfg) if step.name == "train_coarse" else 0,
                        **inputs,
                    )
                runs[name] = run_id
                _collect(have, step, inputs, run_id)
            if step.name == "decompose":
                n_boxes = (outputs["decompose"] or Decomposed.from_run(have["decompose_run"])).n_boxes
                say(f"{n_boxes} local models on {'GPUs ' + ','.join(opts.gpus) if opts.gpus else 'the CPU'}")
        _train_all(batch, opts, steps)
        if steps.adopted:
            say(f"adopted {len(steps.adopted)} runs of an unfinished earlier parent: {', '.join(steps.adopted)}")
        ev = have["evaluate_run"]
        evaluation = outputs.get("evaluate") or Evaluation.from_run(ev)
        results = evaluation.results
        wall, trained = time.time() - t0, _train_time_total([r for n, r in runs.items() if n not in steps.reused])
        copied = ("train_accuracy/", "val_accuracy/", "speedup")  # the results table; per-class ones stay on evaluate
        retry(
            mlflow.log_metrics,
            {
                **{k: v for k, v in results.items() if k.startswith(copied)},
                "reused_steps": len(steps.reused),
                "wall_time_s": wall,
                "train_time_total_s": trained,
                "overhead_fraction": 1 - trained / wall,
            },
        )
        mlflow.set_tags({run_tag(k): v for k, v in runs.items()})
        if steps.reused:
            mlflow.set_tag(REUSED_TAG, ",".join(sorted(steps.reused)))
        mlflow.set_tag(
            NOTE_TAG,
            describe.parent_note(
                cfg, evaluation.table, describe.paper_row(cfg), steps.elsewhere, steps.adopted, evaluation.per_class
            ),
        )
        say(
            f"done in {time.time() - t0:.0f} s; CNN-DNN val accuracy {results.get('val_accuracy/cnn_dnn', float('nan')):.4f}"
        )
        say(f"runs table: {ui_link(exp)}")
        return {
            "runs": runs,
            "decompose": have["decompose_run"],
            "coarse": have["coarse_run"],
            "evaluate": ev,
            "results": results,
            "reused": steps.reused,
            "adopted": steps.adopted,
        }


def _train_time_total(run_ids: list[str]) -> float:
    """Time spent inside training by these runs; a packed group (tag ``ddmlflow.group``) counted once."""
    total, groups = 0.0, set()
    for r in (retry(mlflow.get_run, r).data for r in run_ids):
        group = r.tags.get(GROUP_TAG)
        if group not in groups:
            total += r.metrics.get("train_time_s", 0.0)
        if group:
            groups.add(group)
    return total


def _collect(have: dict, step: Step, inputs: dict, run_id: str) -> None:
    """Make a step's run id an input of the later steps."""
    if step.output == "local_runs":
        have.setdefault("local_runs", []).append(run_id)
    elif step.output == "strategy_runs":
        have["strategy_runs"][step.name] = run_id
    else:
        have[step.output] = run_id


def _train_all(jobs: list[Job], opts: FullOptions, steps: Reuse | None = None) -> None:
    """Run the trainings through the executor, each pinned to GPU k mod G; close what failed; release
    each one's claim as it ends (``steps``: the ``Reuse`` that claimed them; it releases the rest)."""
    if not jobs:
        return
    _run_trainings(jobs, opts, steps.release if steps is not None else None)


def _run_trainings(jobs: list[Job], opts: FullOptions, release=None) -> None:
    per_box = [j for j in jobs if "box" in j.inputs]
    for k, job in enumerate(per_box + [j for j in jobs if "box" not in j.inputs]):
        job.device = devices.pin(job.inputs["box"] if "box" in job.inputs else k, list(opts.gpus))
    name = choose(opts.executor, sum(j.step == "train_local" for j in jobs), opts.gpus, opts.jobs_per_gpu)
    mlflow.set_tag(EXECUTOR_TAG, name)
    for job in jobs:  # the pinned device; the training overwrites it with the one TensorFlow used
        for tag, value in {EXECUTOR_TAG: name, DEVICE_TAG: f"GPU:{job.device}" if job.device else "CPU"}.items():
            retry(mlflow.MlflowClient().set_tag, job.run_id, tag, value)
    say(f"{len(jobs)} trainings through the {name} executor")
    # off the critical path: the coarse net (and the CPU's non-local jobs of the packed executor) need it
    preload.start(
        "tensorflow", "keras", "ddmlflow.pipeline.train", "ddmlflow.pipeline.coarse", "ddmlflow.pipeline.evaluate"
    )
    with (
        open_executor(name, opts) as executor,
        progress.Display(
            [progress.Training(j.name, j.run_id, progress.epochs_of(j.step, j.config)) for j in jobs]
        ) as display,
    ):
        run_and_close(
            executor,
            jobs,
            display.counts,
            "trainings",
            "No later step ran. Rerun the same command to resume them (finished ones are reused).",
            release,
        )


def _releasing(release: Callable[[str], object], run_id: str) -> Callable[[object], object]:
    """A future's done-callback that calls ``release(run_id)`` (the future itself is not needed)."""
    return lambda _: release(run_id)


def run_and_close(executor: Executor, jobs: list[Job], progress, what: str, hint: str, release=None) -> list[Result]:
    """Submit ``jobs`` and wait for them; ``release(run_id)`` as each ends (its claim); close the runs a
    killed job left open (KILLED on Ctrl-C, FAILED with the reason); raise ``StepsFailed`` naming every
    failure and ``hint``."""
    for job in jobs:
        future = executor.submit(job)
        if release:
            future.add_done_callback(_releasing(release, job.run_id))
    try:
        results = executor.wait(progress)
    except KeyboardInterrupt:  # Ctrl-C: the executor stopped the jobs; close the runs they left open
        for job in jobs:
            if retry(mlflow.get_run, job.run_id).info.status == "RUNNING":
                end_run(job.run_id, "KILLED", "interrupted (Ctrl-C in the parent)")
        raise
    failed = [r for r in results if not r.ok]
    for r in failed:  # a process killed by a signal could not close its own run
        if retry(mlflow.get_run, r.job.run_id).info.status == "RUNNING":
            end_run(r.job.run_id, "FAILED", r.reason)
    if failed:
        lines = "; ".join(f"{r.job.name}: {r.reason} (log: {r.job.log})" for r in failed)
        raise StepsFailed(f"{len(failed)} of {len(jobs)} {what} failed: {lines}. {hint}")
    return results


def run_full(cfg: RunConfig, opts: FullOptions, run_id: str = "", track=None) -> dict:
    """``full`` from Python as from the command line: a parent run (given, or new), then every step."""
    return COMMANDS["full"].run(cfg, opts, run_id, track)


def log_environment() -> None:
    """The exact installed versions, on the parent run: ``environment.json`` and ``ddmlflow.version.*`` tags."""
    env = environment.installed()
    retry(mlflow.log_dict, env, "environment.json")
    mlflow.set_tags(environment.version_tags(env))


__all__ = ["FullOptions", "Result", "StepsFailed", "full", "run_full"]
