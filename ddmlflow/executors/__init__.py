"""Executors: "train these jobs, each into its own child run".

``full`` creates every child run first, then submits the trainings to an
executor as ``Job``s (step, run id, inputs, config, device as fields) and gets
a future of each job's ``Result`` back (``base.Executor``: a context manager in
the style of ``concurrent.futures``). How a job runs is the executor's business:

* ``process``: one fresh OS process per job (``executors/process.py``).
* ``packed``: one process per device; its locals trained as one program (``executors/packed.py``).
* ``ray``: one Ray task per job, on a local Ray instance or a cluster (``executors/ray.py``).

``auto`` picks ``packed`` when locals share a device (the CPU, or more locals
than GPUs x ``jobs_per_gpu``), else ``process``.
"""

from __future__ import annotations

import importlib

from ..steps import EXECUTOR_CLASSES, EXECUTORS
from .base import Executor, ExecutorOptions, Job, JobFuture, OnChange, Result, attempt, progress_counts, tracking_env

__all__ = [
    "EXECUTORS",
    "Executor",
    "ExecutorOptions",
    "Job",
    "JobFuture",
    "OnChange",
    "Result",
    "attempt",
    "check",
    "choose",
    "open_executor",
    "prestart",
    "progress_counts",
    "tracking_env",
]


def executor_class(name: str) -> type[Executor]:
    """The class registered as ``name`` (``steps.EXECUTOR_CLASSES``), imported only now (Ray is an optional
    extra); it may define ``check(opts, tracking_uri)`` and ``prestart(opts) -> bool`` (static)."""
    module, cls = EXECUTOR_CLASSES[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def choose(name: str, n_locals: int, gpus: tuple[str, ...] | list[str], jobs_per_gpu: int = 1) -> str:
    """``auto``: ``packed`` when locals share a device, else ``process``; other names stay (Ray only when asked)."""
    if name != "auto":
        return name
    return "packed" if not gpus or n_locals > len(gpus) * jobs_per_gpu else "process"


def open_executor(name: str, opts=None) -> Executor:
    """The executor called ``name`` (after ``choose``), built from a command's options (``FullOptions``,
    ``TuneOptions``, an ``ExecutorOptions``: the knobs it has); use it as a context manager."""
    return executor_class(name).from_options(ExecutorOptions.of(opts) if opts is not None else ExecutorOptions())


def prestart(opts) -> bool:
    """Let the executor that the trainings of a command with these options (``full``'s) will go through
    start early (the packed workers import TensorFlow while the command opens its run); True if it did."""
    hook = getattr(executor_class(choose(opts.executor, 0, opts.gpus, opts.jobs_per_gpu)), "prestart", None)
    return bool(hook and hook(opts))


def check(opts, tracking_uri: str) -> None:
    """Refuse, before any work, options the chosen executor cannot run (``full`` calls it first)."""
    if opts.executor in EXECUTOR_CLASSES:
        hook = getattr(executor_class(opts.executor), "check", None)
        if hook:
            hook(opts, tracking_uri)
