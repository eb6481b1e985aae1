"""``full``: every step of the registry under one parent run.

The chain is ``steps.STEPS`` in order: decompose, then the trainings (global
and the N locals) handed to the executor together, the coarse net, the
chosen strategies (through the executor too), evaluate. Each step has a key
(its parameters as strings + the code version): a FINISHED run with the same
key is reused, an unfinished one (killed, failed) is resumed in place from
its last finished epoch, ``force=True`` trains anew. Cheap steps run in this
process; calling the step functions in-process, rather than ``mlflow.run``
per step, saves a process start and a TensorFlow import per step and lets us
pin devices and pass parent ids.
"""
from __future__ import annotations

import time

import mlflow

from .. import devices
from ..config import FullOptions, RunConfig
from ..executors import Job, Result, check, make_executor
from ..steps import STEPS, Step
from ..tracking import (create_child, end_run, find_run, log_params, retry, say, step_key, step_run, ui_link,
                        work_dir)


class StepsFailed(RuntimeError):
    """Some trainings failed; the message names them and how to resume."""


class Steps:
    """Find, reuse or create the child run of each step under one parent."""

    def __init__(self, cfg: RunConfig, parent_id: str, experiment_id: str, force: bool):
        self.cfg, self.parent, self.exp, self.force = cfg, parent_id, experiment_id, force
        self.reused: dict[str, str] = {}

    def get(self, step: Step, inputs: dict) -> tuple[str, bool]:
        """(run id, already finished) for a step; unfinished matches are resumed in place."""
        name = step.run_name(inputs)
        key = step_key(step.name, {**self.cfg.params(), **inputs})
        found = None if self.force else find_run(self.exp, key)
        if found is not None and found.info.status == "FINISHED":
            self.reused[name] = found.info.run_id
            say(f"{name}: reusing finished run {found.info.run_id}")
            return found.info.run_id, True
        if found is not None:
            say(f"{name}: resuming unfinished run {found.info.run_id}")
            return found.info.run_id, False
        return create_child(self.exp, self.parent, name, step.name, key), False

    def inline(self, step: Step, inputs: dict) -> str:
        """Run a cheap step in this process, unless reused."""
        run_id, done = self.get(step, inputs)
        if not done:
            with step_run(run_id):
                step.call(self.cfg, **inputs)
        return run_id


def _instances(step: Step, have: dict, n_boxes: int) -> list[dict]:
    """The inputs of each run of ``step``: one per box for per-box steps, else one."""
    base = {i.name: have.get(i.name) for i in step.inputs if i.name != "box"}
    if any(i.name == "box" for i in step.inputs):
        return [{**base, "box": b} for b in range(n_boxes)]
    return [base]


def _selected(step: Step, opts: FullOptions) -> bool:
    if step.strategy:
        return step.name in opts.strategies
    return step.name != "train_global" or opts.run_global


def full(cfg: RunConfig, opts: FullOptions) -> dict:
    """In the active (parent) run: every step, then a summary; raises ``StepsFailed``."""
    parent = mlflow.active_run()
    exp = parent.info.experiment_id
    t0 = time.time()
    log_params({**cfg.params(), **opts.params()})
    steps = Steps(cfg, parent.info.run_id, exp, opts.force)
    have: dict = {"registered_model_name": opts.registered_model_name, "strategy_runs": {}}
    runs: dict[str, str] = {}
    batch: list[Job] = []
    n_boxes = 0
    for step in STEPS.values():
        if not _selected(step, opts):
            continue
        if not step.training:
            _train_all(batch, opts)
            batch = []
        for inputs in _instances(step, have, n_boxes):
            name = step.run_name(inputs)
            if step.training:
                run_id, done = steps.get(step, inputs)
                if not done:
                    batch.append(Job(step.name, name, run_id, inputs, cfg, log=work_dir("logs", run_id) / "train.log",
                                     env={"MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}))
            else:
                run_id = steps.inline(step, inputs)
            runs[name] = run_id
            _collect(have, step, inputs, run_id)
        if step.name == "decompose":
            n_boxes = int(retry(mlflow.get_run, have["decompose_run"]).data.params["n_boxes"])
            say(f"{n_boxes} local models on {'GPUs ' + ','.join(opts.gpus) if opts.gpus else 'the CPU'}")
    _train_all(batch, opts)
    ev = have["evaluate_run"]
    results = retry(mlflow.get_run, ev).data.metrics
    retry(mlflow.log_metrics, {**{k: v for k, v in results.items() if "/" in k or k == "speedup"},
                               "reused_steps": len(steps.reused), "wall_time_s": time.time() - t0})
    mlflow.set_tags({f"ddmlflow.run.{k}": v for k, v in runs.items()})
    if steps.reused:
        mlflow.set_tag("ddmlflow.reused", ",".join(sorted(steps.reused)))
    say(f"done in {time.time() - t0:.0f} s; CNN-DNN val accuracy {results.get('val_accuracy/cnn_dnn', float('nan')):.4f}")
    say(f"runs table: {ui_link(exp)}")
    return {"runs": runs, "decompose": have["decompose_run"], "coarse": have["coarse_run"], "evaluate": ev,
            "results": results, "reused": steps.reused}


def _collect(have: dict, step: Step, inputs: dict, run_id: str) -> None:
    """Make a step's run id an input of the later steps."""
    if step.output == "local_runs":
        have.setdefault("local_runs", []).append(run_id)
    elif step.output == "strategy_runs":
        have["strategy_runs"][step.name] = run_id
    else:
        have[step.output] = run_id


def _train_all(jobs: list[Job], opts: FullOptions) -> None:
    """Run the trainings through the executor, each pinned to GPU k mod G; close what failed."""
    if not jobs:
        return
    per_box = [j for j in jobs if "box" in j.inputs]
    for k, job in enumerate(per_box + [j for j in jobs if "box" not in j.inputs]):
        job.device = devices.pin(job.inputs["box"] if "box" in job.inputs else k, list(opts.gpus))

    def progress(s: dict) -> None:
        say(f"trainings: {s['done']} done, {s['running']} running, {s['failed']} failed, "
            f"{s['pending']} waiting ({s['elapsed_s']:.0f} s)")
    try:
        executor = make_executor(opts.executor, opts.jobs_per_gpu, opts.max_parallel, opts.ray_address, bool(opts.gpus))
        results = executor.run(jobs, progress)
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
        raise StepsFailed(f"{len(failed)} of {len(jobs)} trainings failed: {lines}. No later step ran. "
                          "Rerun the same command to resume them (finished ones are reused).")


def run_full(cfg: RunConfig, opts: FullOptions, run_id: str = "") -> dict:
    """``full`` as a top-level command: the parent run (given, or new in the chosen experiment)."""
    from ..tracking import setup

    check(opts, mlflow.get_tracking_uri())  # before any run or connection: e.g. sqlite with a Ray cluster
    exp = setup()
    run_id = run_id or create_child(exp, None, "full", "full", key="")
    with step_run(run_id):
        return full(cfg, opts)


__all__ = ["FullOptions", "Result", "StepsFailed", "full", "run_full"]
