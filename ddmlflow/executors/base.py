"""What every executor shares: a ``Job`` in, a future of its ``Result`` out, and the one way a job runs.

Below the executors themselves, so ``process``, ``packed``, ``ray`` and the
worker import it without importing one another through the package.

An executor is a context manager in the style of ``concurrent.futures``::

    with executors.open("process", opts) as ex:
        futures = [ex.submit(job) for job in jobs]
        ex.wait(on_change)                   # or: f.result() for f in futures
    # the block's end waits for what is left and frees what the executor holds (workers, a Ray session)

Submitted jobs run together when ``wait`` (or a future's ``result``) is called:
the packed executor must see a device's locals at once to train them as one
program. Each future resolves as its job ends, not when the last one does.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig, from_json, to_json
from ..steps import job_step


@dataclass(frozen=True)
class ExecutorOptions:
    """The knobs an executor may read (each takes what it needs in ``from_options``)."""

    jobs_per_gpu: int = 1  # trainings at once per GPU
    max_parallel: int = 1  # trainings at once on the CPU (process executor)
    ray_address: str = ""  # '' = a local Ray; else the cluster's address
    gpus: tuple[str, ...] = ()  # the GPUs the trainings are pinned to ('' = none: CPU)

    @classmethod
    def of(cls, opts: Any) -> ExecutorOptions:
        """From a command's options (``FullOptions``, ``TuneOptions``, ...): the fields they have."""
        return cls(**{f.name: getattr(opts, f.name) for f in dataclasses.fields(cls) if hasattr(opts, f.name)})


@dataclass
class Job:
    step: str  # registry name, e.g. "train_local" (``steps.job_step``)
    name: str  # run name, e.g. "train_local/03"
    run_id: str  # the child run it logs into (created by the driver)
    inputs: dict[str, Any] = field(default_factory=dict)  # the step's inputs, e.g. {"decompose_run": ..., "box": 3}
    config: RunConfig | None = None
    device: str = ""  # CUDA_VISIBLE_DEVICES for it ('' = CPU)
    log: Path | None = None  # where its output goes
    env: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """What a worker needs to run the job (config and typed inputs as ``config.to_json`` writes them)."""
        inputs = {
            k: {"__config__": to_json(v), "class": f"{type(v).__module__}:{type(v).__qualname__}"}
            if dataclasses.is_dataclass(v)
            else v
            for k, v in self.inputs.items()
        }
        return json.dumps(
            {
                "step": self.step,
                "name": self.name,
                "run_id": self.run_id,
                "inputs": inputs,
                "config": to_json(self.config),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Job:
        d = json.loads(text)
        inputs = {
            k: from_json(v["__config__"], _class(v["class"])) if isinstance(v, dict) and "__config__" in v else v
            for k, v in d["inputs"].items()
        }
        return cls(d["step"], d["name"], d["run_id"], inputs, from_json(d["config"]))


def _class(path: str) -> type:
    """A typed input's class, "module:Name" (``ddmlflow`` modules only)."""
    import importlib

    module, name = path.split(":")
    if module != "ddmlflow" and not module.startswith("ddmlflow."):
        raise ValueError(f"not a ddmlflow class: {path}")
    cls: type = getattr(importlib.import_module(module), name)
    return cls


@dataclass
class Result:
    job: Job
    ok: bool
    reason: str = ""  # why it failed: the last line of its log, or the signal
    elapsed_s: float = 0.0


OnChange = Callable[[dict[str, Any]], None]


def attempt(step: str, run_id: str, cfg: RunConfig | None, inputs: dict[str, Any]) -> str:
    """One step into its run, in this process; '' or why it failed (the run is then FAILED with it).

    Every route ends here or in ``job_step(step).run_into``: the worker's ``--job``, the packed worker,
    the driver's own jobs (Ray calls ``run_into`` itself, so that Ray retries a failure)."""
    try:
        job_step(step).run_into(run_id, cfg, inputs)
        return ""
    except Exception as e:  # noqa: BLE001 - step_run marked the run FAILED; the caller goes on
        return f"{type(e).__name__}: {e}"


class JobFuture(Future["Result"]):
    """A job's ``Result`` to come; ``result()`` on a job not started yet runs the executor's queue."""

    def __init__(self, executor: Executor):
        super().__init__()
        self._executor = executor

    def result(self, timeout: float | None = None) -> Result:
        if not self.done() and self._executor._queued:
            self._executor.wait()
        return super().result(timeout)


class Executor:
    """Base of every executor: ``submit`` queues, ``wait`` runs the queue (``_run``), the futures resolve.

    A subclass implements ``_run(jobs, on_change) -> list[Result]`` (a failing job does not stop the
    others; Ctrl-C stops every job and propagates) and calls ``self._finished(result)`` as each job ends;
    ``close`` frees what it holds. ``from_options(ExecutorOptions)`` builds it; optional static
    ``check(opts, tracking_uri)`` and ``prestart(opts) -> bool`` run before any work.
    """

    def __init__(self) -> None:
        self._queued: list[Job] = []
        self._futures: dict[int, JobFuture] = {}

    @classmethod
    def from_options(cls, o: ExecutorOptions) -> Executor:
        return cls()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, kind: type | None, *_: Any) -> None:
        try:
            if kind is None:
                self.wait()
        finally:
            self.close()

    def submit(self, job: Job) -> JobFuture:
        future = JobFuture(self)
        self._futures[id(job)] = future
        self._queued.append(job)
        return future

    def wait(self, on_change: OnChange | None = None) -> list[Result]:
        """Run every queued job; their results in submission order (each future resolved as it ended)."""
        jobs, self._queued = self._queued, []
        if not jobs:
            return []
        try:
            results = self._run(jobs, on_change)
        except BaseException as e:
            for job in jobs:
                future = self._futures.pop(id(job), None)
                if future is not None and not future.done():
                    future.set_exception(e)
            raise
        for r in results:
            self._finished(r)
        order = {id(j): i for i, j in enumerate(jobs)}
        return sorted(results, key=lambda r: order[id(r.job)])

    def run(self, jobs: list[Job], on_change: OnChange | None = None) -> list[Result]:
        """Submit ``jobs`` and wait for them (results in job order)."""
        for job in jobs:
            self.submit(job)
        return self.wait(on_change)

    def close(self) -> None:
        """Free what the executor holds (nothing here)."""

    def _finished(self, result: Result) -> None:
        future = self._futures.pop(id(result.job), None)
        if future is not None and not future.done():
            future.set_result(result)

    def _run(self, jobs: list[Job], on_change: OnChange | None) -> list[Result]:
        raise NotImplementedError


def thread_policy(job: Job) -> None:
    """The engine's CPU threads for ``job``, in a fresh process before TensorFlow runs an op: a local trains
    with a packed group's threads (``packed_training.configure_threads``) whichever executor runs it, so the
    routes round alike and give the same weights (Adam turns the rounding noise of a gradient that should
    be zero, a conv bias before batch normalisation, into whole steps); other nets keep TensorFlow's own."""
    if job.step == "train_local":
        from ..packed_training import configure_threads  # lazy: TensorFlow; only a training process needs it

        configure_threads()


def tracking_env() -> dict[str, str]:
    """What a training process needs beyond the parent's environment: the parent's tracking store."""
    import mlflow  # lazy: the workers import this module before their tracking store is set

    return {"MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}


def progress_counts(jobs: int, done: list[Result], running: int, t0: float) -> dict[str, float]:
    ok = sum(r.ok for r in done)
    return {
        "done": ok,
        "failed": len(done) - ok,
        "running": running,
        "pending": jobs - len(done) - running,
        "elapsed_s": time.time() - t0,
    }
