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

from .base import Executor, Job, OnChange, Result, attempt, progress_counts, tracking_env

__all__ = ["EXECUTORS", "Executor", "Job", "OnChange", "Result", "attempt", "check", "choose", "make_executor",
           "prestart", "progress_counts", "tracking_env"]

EXECUTORS: tuple[str, ...] = ("auto", "process", "packed", "ray")


def choose(name: str, n_locals: int, gpus: tuple[str, ...] | list[str], jobs_per_gpu: int = 1) -> str:
    """``auto``: ``packed`` when locals share a device, else ``process``; other names stay (Ray only when asked)."""
    if name != "auto":
        return name
    return "packed" if not gpus or n_locals > len(gpus) * jobs_per_gpu else "process"


def make_executor(name: str, jobs_per_gpu: int = 1, max_parallel: int = 1, ray_address: str = "",
                  gpus: bool = False) -> Executor:
    """The executor called ``name`` (after ``choose``)."""
    if name == "ray":  # imports ray only now: it is an optional extra
        from .ray import RayExecutor  # lazy: each executor is imported only when chosen

        return RayExecutor(ray_address, jobs_per_gpu=jobs_per_gpu, gpus=gpus)
    if name == "packed":
        from .packed import PackedExecutor  # lazy: each executor is imported only when chosen

        return PackedExecutor()
    from .process import ProcessExecutor  # lazy: each executor is imported only when chosen

    return ProcessExecutor(jobs_per_device=jobs_per_gpu, max_parallel=max_parallel)


def prestart(opts) -> bool:
    """Start the packed workers now, if the trainings of a command with these options (``full``'s) will go
    through the packed executor (on the CPU, or when asked for); True if it did."""
    if choose(opts.executor, 0, opts.gpus, opts.jobs_per_gpu) != "packed":
        return False
    from .packed import prestart as start  # lazy: each executor is imported only when chosen

    start(list(opts.gpus) or [""])  # no MLflow import here: the store's URI comes with ``store_ready``
    return True


def check(opts, tracking_uri: str) -> None:
    """Refuse, before any work, options the chosen executor cannot run (``full`` calls it first)."""
    if opts.executor == "ray":
        from .ray import check as check_ray  # lazy: each executor is imported only when chosen

        check_ray(opts.ray_address, tracking_uri, gpus=tuple(opts.gpus))
