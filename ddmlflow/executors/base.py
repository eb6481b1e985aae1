"""What every executor shares: a ``Job`` in, a ``Result`` out, and the step run in-process.

Below the executors themselves, so ``process``, ``packed``, ``ray`` and the
packed worker import it without importing one another through the package.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from ..steps import STEPS

if TYPE_CHECKING:
    from ..config import RunConfig

@dataclass(frozen=True)
class ExecutorOptions:
    """The knobs an executor may read (each takes what it needs in ``from_options``)."""

    jobs_per_gpu: int = 1        # trainings at once per GPU
    max_parallel: int = 1        # trainings at once on the CPU (process executor)
    ray_address: str = ""        # '' = a local Ray; else the cluster's address
    gpus: tuple[str, ...] = ()   # the GPUs the trainings are pinned to ('' = none: CPU)


@dataclass
class Job:
    step: str                          # registry name, e.g. "train_local"
    name: str                          # run name, e.g. "train_local/03"
    run_id: str                        # the child run it logs into (created by the driver)
    inputs: dict[str, Any] = field(default_factory=dict)   # the step's inputs, e.g. {"decompose_run": ..., "box": 3}
    config: RunConfig | None = None    # ddmlflow.config.RunConfig
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


OnChange = Callable[[dict[str, Any]], None]


def attempt(step: str, run_id: str, cfg: RunConfig, inputs: dict[str, Any]) -> str:
    """One step into its run, in this process; '' or why it failed (the run is then FAILED with it)."""
    try:
        STEPS[step].run_into(run_id, cfg, inputs)
        return ""
    except Exception as e:  # noqa: BLE001 - step_run marked the run FAILED; the caller goes on
        return f"{type(e).__name__}: {e}"


class Executor(Protocol):
    def run(self, jobs: list[Job], on_change: OnChange | None = None) -> list[Result]:
        """Run every job (a failing one does not stop the others); results in job order.
        Ctrl-C (KeyboardInterrupt) stops every job and propagates."""


def tracking_env() -> dict[str, str]:
    """What a training process needs beyond the parent's environment: the parent's tracking store."""
    import mlflow

    return {"MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}


def progress_counts(jobs: int, done: list[Result], running: int, t0: float) -> dict[str, float]:
    import time

    ok = sum(r.ok for r in done)
    return {"done": ok, "failed": len(done) - ok, "running": running, "pending": jobs - len(done) - running,
            "elapsed_s": time.time() - t0}
