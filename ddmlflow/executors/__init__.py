"""Executors: "train these jobs, each into its own child run".

``full`` creates every child run first, then hands the trainings to an
executor as ``Job``s (step, run id, inputs, config, device as fields) and gets
one ``Result`` per job back. How a job runs is the executor's business:

* ``process``: one fresh OS process per job (``executors/process.py``).
* ``packed``: one process per device; its locals trained as one program (``executors/packed.py``).
* ``ray``: one Ray task per job, on a local Ray instance or a cluster (``executors/ray.py``).

``auto`` picks ``packed`` when locals share a device (the CPU, or more locals
than GPUs x ``jobs_per_gpu``), else ``process``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

EXECUTORS: tuple[str, ...] = ("auto", "process", "packed", "ray")


@dataclass
class Job:
    step: str                          # registry name, e.g. "train_local"
    name: str                          # run name, e.g. "train_local/03"
    run_id: str                        # the child run it logs into (created by the driver)
    inputs: dict = field(default_factory=dict)   # the step's inputs, e.g. {"decompose_run": ..., "box": 3}
    config: object = None              # ddmlflow.config.RunConfig
    device: str = ""                   # CUDA_VISIBLE_DEVICES for it ('' = CPU)
    log: Path | None = None            # where its output goes
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] | None = None      # the command (process executor); None: the step's CLI command


@dataclass
class Result:
    job: Job
    ok: bool
    reason: str = ""                   # why it failed: the last line of its log, or the signal
    elapsed_s: float = 0.0


OnChange = Callable[[dict], None]


def attempt(step: str, run_id: str, cfg, inputs: dict) -> str:
    """One step into its run, in this process; '' or why it failed (the run is then FAILED with it)."""
    from ..steps import STEPS

    try:
        STEPS[step].run_into(run_id, cfg, inputs)
        return ""
    except Exception as e:  # noqa: BLE001 - step_run marked the run FAILED; the caller goes on
        return f"{type(e).__name__}: {e}"


class Executor(Protocol):
    def run(self, jobs: list[Job], on_change: OnChange | None = None) -> list[Result]:
        """Run every job (a failing one does not stop the others); results in job order.
        Ctrl-C (KeyboardInterrupt) stops every job and propagates."""


def choose(name: str, n_locals: int, gpus: tuple[str, ...] | list[str], jobs_per_gpu: int = 1) -> str:
    """``auto``: ``packed`` when locals share a device, else ``process``; other names stay (Ray only when asked)."""
    if name != "auto":
        return name
    return "packed" if not gpus or n_locals > len(gpus) * jobs_per_gpu else "process"


def make_executor(name: str, jobs_per_gpu: int = 1, max_parallel: int = 1, ray_address: str = "",
                  gpus: bool = False) -> Executor:
    """The executor called ``name`` (after ``choose``)."""
    if name == "ray":  # imports ray only now: it is an optional extra
        from .ray import RayExecutor

        return RayExecutor(ray_address, jobs_per_gpu=jobs_per_gpu, gpus=gpus)
    if name == "packed":
        from .packed import PackedExecutor

        return PackedExecutor()
    from .process import ProcessExecutor

    return ProcessExecutor(jobs_per_device=jobs_per_gpu, max_parallel=max_parallel)


def tracking_env() -> dict[str, str]:
    """What a training process needs beyond the parent's environment: the parent's tracking store."""
    import mlflow

    return {"MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}


def prestart(opts) -> bool:
    """Start the packed workers now, if the trainings of a command with these options (``full``'s) will go
    through the packed executor (on the CPU, or when asked for); True if it did."""
    if choose(opts.executor, 0, opts.gpus, opts.jobs_per_gpu) != "packed":
        return False
    from .packed import prestart as start

    start(list(opts.gpus) or [""])  # no MLflow import here: the store's URI comes with ``store_ready``
    return True


def check(opts, tracking_uri: str) -> None:
    """Refuse, before any work, options the chosen executor cannot run (``full`` calls it first)."""
    if opts.executor == "ray":
        from .ray import check as check_ray

        check_ray(opts.ray_address, tracking_uri, gpus=tuple(opts.gpus))


def progress_counts(jobs: int, done: list[Result], running: int, t0: float) -> dict:
    import time

    ok = sum(r.ok for r in done)
    return {"done": ok, "failed": len(done) - ok, "running": running, "pending": jobs - len(done) - running,
            "elapsed_s": time.time() - t0}
