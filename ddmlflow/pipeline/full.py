"""``full``: decompose -> (global + N locals in parallel processes) -> coarse -> evaluate.

Steps run as children of one parent run. Each step has a key (its parameters
as strings + the code version): a FINISHED run with the same key is reused, an
unfinished one (killed, failed) is resumed in place from its last finished
epoch, ``force=True`` trains anew. The cheap steps run in this process; the
trainings each get a fresh process pinned to GPU k mod G. Calling the same step
functions in-process, rather than ``mlflow.run`` per step, saves a process start
and a TensorFlow import per step and lets us pin devices and pass parent ids.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import mlflow

from .. import devices
from ..config import RunConfig
from ..executors import Job, LocalProcessExecutor, python_argv
from ..tracking import (create_child, end_run, find_run, log_params, retry, say, step_key, step_run, ui_link,
                        work_dir)


class StepsFailed(RuntimeError):
    """Some trainings failed; the message names them and how to resume."""


@dataclass(frozen=True)
class FullOptions:
    run_global: bool = True
    gpus: str = "auto"
    jobs_per_gpu: int = 1
    max_parallel: int = 1
    force: bool = False
    registered_model_name: str = ""
    strategies: tuple[str, ...] = ("cnn_dnn",)


class Steps:
    """Find, reuse or create the child run of each step under one parent."""

    def __init__(self, cfg: RunConfig, parent_id: str, experiment_id: str, force: bool):
        self.cfg, self.parent, self.exp, self.force = cfg, parent_id, experiment_id, force
        self.reused: dict[str, str] = {}

    def get(self, step: str, name: str, extra: dict) -> tuple[str, bool]:
        """(run id, already finished) for a step; unfinished matches are resumed in place."""
        key = step_key(step, {**self.cfg.params(), **extra})
        found = None if self.force else find_run(self.exp, key)
        if found is not None and found.info.status == "FINISHED":
            self.reused[name] = found.info.run_id
            return found.info.run_id, True
        if found is not None:
            say(f"{name}: resuming unfinished run {found.info.run_id}")
            return found.info.run_id, False
        return create_child(self.exp, self.parent, name, step, key), False

    def inline(self, step: str, name: str, extra: dict, fn, *args, **kwargs) -> str:
        """Run a cheap step in this process, unless reused."""
        run_id, done = self.get(step, name, extra)
        if done:
            say(f"{name}: reusing finished run {run_id}")
            return run_id
        with step_run(run_id):
            fn(*args, **kwargs)
        return run_id


def full(cfg: RunConfig, opts: FullOptions) -> dict:
    """In the active (parent) run: every step, then a summary; raises ``StepsFailed``."""
    from .decompose import decompose

    parent = mlflow.active_run()
    exp = parent.info.experiment_id
    t0 = time.time()
    log_params({**cfg.params(), "global": opts.run_global, "gpus": opts.gpus, "jobs_per_gpu": opts.jobs_per_gpu,
                "max_parallel": opts.max_parallel, "strategies": ",".join(opts.strategies)})
    steps = Steps(cfg, parent.info.run_id, exp, opts.force)
    dec = steps.inline("decompose", "decompose", {}, decompose, cfg)
    n = int(mlflow.get_run(dec).data.params["n_boxes"])
    gpus = devices.parse_gpus(opts.gpus)
    say(f"{n} local models on {'GPUs ' + ','.join(gpus) if gpus else 'the CPU'}")
    runs: dict[str, str] = {}
    jobs: list[Job] = []
    boxes = ([None] if opts.run_global else []) + list(range(n))
    for k, box in enumerate(boxes):
        name = "train_global" if box is None else f"train_local/{box:02d}"
        run_id, done = steps.get("train_global" if box is None else "train_local", name,
                                 {"decompose_run": dec, "box": box})
        runs[name] = run_id
        if not done:
            sub = ["train-global"] if box is None else ["train-local", "--box", str(box)]
            device = devices.pin(n if box is None else box, gpus)
            jobs.append(Job(name, python_argv(*sub, "--run-id", run_id, "--decompose-run", dec, *cfg_args(cfg)),
                            device, work_dir("logs", run_id) / "train.log",
                            env={"MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}))
    try:
        _train_all(jobs, opts)
    except KeyboardInterrupt:  # Ctrl-C: children were terminated; close the runs they left open
        for run_id in runs.values():
            if retry(mlflow.get_run, run_id).info.status == "RUNNING":
                end_run(run_id, "KILLED", "interrupted (Ctrl-C in the parent)")
        raise
    local_runs = [runs[f"train_local/{i:02d}"] for i in range(n)]
    from .coarse import train_coarse
    from .evaluate import evaluate

    coarse = steps.inline("train_coarse", "train_coarse", {"local_runs": local_runs}, train_coarse, cfg, local_runs)
    strategy_runs = _strategies(steps, cfg, opts, dec, local_runs, coarse)
    glob = runs.get("train_global")
    inputs = {"decompose_run": dec, "local_runs": local_runs, "coarse_run": coarse, "global_run": glob,
              "strategy_runs": strategy_runs, "registered_model_name": opts.registered_model_name}
    ev = steps.inline("evaluate", "evaluate", inputs, evaluate, cfg, dec, local_runs, coarse, glob,
                      opts.registered_model_name, strategy_runs)
    results = retry(mlflow.get_run, ev).data.metrics
    retry(mlflow.log_metrics, {**{k: v for k, v in results.items() if "/" in k or k == "speedup"},
                               "reused_steps": len(steps.reused), "wall_time_s": time.time() - t0})
    mlflow.set_tags({f"ddmlflow.run.{k}": v for k, v in {**runs, "decompose": dec, "train_coarse": coarse,
                                                          "evaluate": ev}.items()})
    if steps.reused:
        mlflow.set_tag("ddmlflow.reused", ",".join(sorted(steps.reused)))
    say(f"done in {time.time() - t0:.0f} s; CNN-DNN val accuracy {results.get('val_accuracy/cnn_dnn', float('nan')):.4f}")
    say(f"runs table: {ui_link(exp)}")
    return {"runs": runs, "decompose": dec, "coarse": coarse, "evaluate": ev, "results": results,
            "reused": steps.reused}


def _train_all(jobs: list[Job], opts: FullOptions) -> None:
    if not jobs:
        return

    def progress(s: dict) -> None:
        say(f"trainings: {s['done']} done, {s['running']} running, {s['failed']} failed, "
            f"{s['pending']} waiting ({s['elapsed_s']:.0f} s)")
    results = LocalProcessExecutor(opts.jobs_per_gpu, opts.max_parallel).run(jobs, progress)
    failed = [r for r in results if not r.ok]
    for r in failed:  # a process killed by a signal could not close its own run
        run_id = r.job.argv[r.job.argv.index("--run-id") + 1]
        if retry(mlflow.get_run, run_id).info.status == "RUNNING":
            end_run(run_id, "FAILED", r.reason())
    if failed:
        lines = "; ".join(f"{r.job.name}: {r.reason()} (log: {r.job.log})" for r in failed)
        raise StepsFailed(f"{len(failed)} of {len(jobs)} trainings failed: {lines}. No coarse net was trained. "
                          "Rerun the same command to resume them (finished ones are reused).")


def _strategies(steps: Steps, cfg, opts, dec, local_runs, coarse) -> dict[str, str]:
    """Further strategies of KLW-TL and Gu et al. (``strategies`` parameter)."""
    out = {}
    for s in opts.strategies:
        if s == "cnn_dnn":
            continue
        from . import strategies

        out[s] = steps.inline(s, s, {"decompose_run": dec, "local_runs": local_runs, "coarse_run": coarse},
                              strategies.run, s, cfg, dec, local_runs, coarse)
    return out


def cfg_args(cfg: RunConfig) -> list[str]:
    """The config as CLI options for a child process (empty values omitted)."""
    out = ["--preset", cfg.preset]
    for k, v in cfg.params().items():
        if k != "preset" and v != "":
            out += [f"--{k.replace('_', '-')}", v]
    return out
