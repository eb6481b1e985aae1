"""The locals of one device as one program: one worker process per device.

Small local nets are dominated by per-step overhead (Python, op dispatch, tiny
kernels): on one CPU four half-width VGG3 locals trained one after another
cost ~0.9x the global net where the FLOPs allow 0.25x. This executor gives
each device one fresh worker process (``executors/worker.py``); it trains all
``train_local`` jobs pinned there as one Keras program (``ddmlflow.packed_training``:
one input pipeline, a branch per local with its own weights, optimizer state
and early stopping), then that device's other jobs (global net, strategies)
one after another in the same process, so TensorFlow is imported and the
data set loaded once. Each local still reports into its own child run.

On the CPU the packed locals run best with one thread per op and the branches
side by side (``packed_training.configure_threads``), while a big net (the global one)
wants TensorFlow's default threads (2D VGG3 ~10 %, 3D CNN ~40 % slower with one
thread per op). Threads are fixed when TensorFlow starts, so there the CPU's
other jobs run in this (the driver's) process, which has the default threads
and, in ``full``, TensorFlow already imported: no second worker to start,
import and connect (~12 s of CPU, on two cores while the packed worker starts).
They start when the packed worker has trained its groups (while it logs their
models and probabilities) or has ended: one training at a time on the device.
Where this process cannot hide its GPUs from TensorFlow any more, they get a
worker of their own instead.

``prestart(devices)`` starts workers before their jobs are known: ``full``
starts the packed worker before it imports MLflow and opens its parent run, so
the worker's imports (~5-10 s) overlap the parent's own start and ``decompose``.
A prestarted worker touches the tracking store only after ``store_ready()``,
which hands it the store's URI (the parent creates the store: concurrent
creation corrupted one; and a store set in Python is not in the environment);
``stop_spares()`` stops those that got no job.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import preload
from .base import Executor, ExecutorOptions, Job, OnChange, Result, attempt, progress_counts, tracking_env
from .process import child_env, reason, terminate
from .worker import LOG, READY, SPEC, STATUS


def groups(jobs: list[Job]) -> dict[str, list[Job]]:
    """Jobs by device, in job order."""
    out: dict[str, list[Job]] = {}
    for j in jobs:
        out.setdefault(j.device, []).append(j)
    return out


def workers(jobs: list[Job]) -> list[tuple[str, list[Job], str | None]]:
    """(name, jobs, name of the worker to wait for) per worker: one per device; on the CPU
    (device '') the non-local jobs apart ('cpu-other', run in the driver) when two or more locals are packed."""
    out = []
    for device, group in groups(jobs).items():
        local = [j for j in group if j.step == "train_local"]
        other = [j for j in group if j.step != "train_local"]
        if device == "" and len(local) > 1 and other:
            out += [("cpu-packed", local, None), ("cpu-other", other, "cpu-packed")]
        else:
            out.append((device or "cpu", group, None))
    return out


@dataclass
class _Worker:
    device: str
    folder: Path
    proc: subprocess.Popen
    jobs: list[Job] = field(default_factory=list)
    start: float = 0.0

    def assign(self, jobs: list[Job], then: Path | None) -> None:
        """Hand the worker its jobs (written atomically: it polls for the file)."""
        self.jobs, self.start = jobs, time.time()
        _write(
            self.folder / SPEC,
            {
                "jobs": [j.to_json() for j in jobs],
                "log": str(jobs[0].log),
                "then": str(then) if then else "",
                **_tracking(),
            },
        )

    def results(self) -> list[Result]:
        """Each job's outcome as the worker recorded it; what it never reached failed with the worker."""
        status, elapsed = self.folder / STATUS, time.time() - self.start
        seen = json.loads(status.read_text()) if status.exists() else {}
        log = self.jobs[0].log if self.jobs[0].log.exists() else self.folder / LOG  # killed before its jobs
        why = reason(self.proc.returncode, log) if self.proc.returncode != 0 else "the worker ended before this job"
        shutil.rmtree(self.folder, ignore_errors=True)  # spec, status, warm-up log: all read or copied
        return [
            Result(j, seen[j.run_id]["ok"], seen[j.run_id]["reason"], elapsed)
            if j.run_id in seen
            else Result(j, False, why, elapsed)
            for j in self.jobs
        ]


def _write(path: Path, content: dict) -> None:
    """Atomically: the worker polls for the file and reads it as soon as it exists."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content))
    os.replace(tmp, path)


def _tracking() -> dict[str, str]:
    """The driver's store, for a worker: ``tracking_uri`` in its spec or ``ready`` file."""
    return {"tracking_uri": tracking_env()["MLFLOW_TRACKING_URI"]}


def _spawn(device: str) -> _Worker:
    """A worker for ``device``; it learns the store from its ``ready`` or spec file (prestarted: the store
    may not exist yet)."""
    folder = Path(tempfile.mkdtemp(prefix=f"ddmlflow-worker-{device or 'cpu'}-"))
    env = child_env(device, tracking=False)  # no MLflow import here (prestart)
    with open(folder / LOG, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ddmlflow.executors.worker", str(folder)],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return _Worker(device, folder, proc)


def _cpu_only_here() -> bool:
    """Hide every GPU from this process's TensorFlow (before it starts); False if it already sees one."""
    preload.wait()
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
        return True
    except RuntimeError:  # TensorFlow has started: fine only if it found no GPU
        return not tf.config.list_logical_devices("GPU")


def run_here(job: Job) -> Result:
    """One job in this process, into its run (FAILED with the reason on an error), printing into its log."""
    t0 = time.time()
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "a") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        why = attempt(job.step, job.run_id, job.config, job.inputs)
    return Result(job, not why, why, time.time() - t0)


SPARES: list[_Worker] = []  # this process's prestarted workers without a job yet


def prestart(devices: list[str]) -> None:
    """Start a worker per device that has no spare yet; the next ``run`` hands them their jobs."""
    have = {w.device for w in SPARES if w.proc.poll() is None}
    SPARES.extend(_spawn(d) for d in dict.fromkeys(devices) if d not in have)


def store_ready() -> None:
    """The tracking store exists now: the spares may connect to it (this process's store)."""
    for w in SPARES:
        _write(w.folder / READY, _tracking())


def stop_spares() -> None:
    """Stop the prestarted workers that got no job."""
    terminate([w.proc for w in SPARES], grace_s=5.0)
    for w in SPARES:
        shutil.rmtree(w.folder, ignore_errors=True)
    SPARES.clear()


class PackedExecutor(Executor):
    """One worker per device, all devices at once (on the CPU: one worker, then this process)."""

    def __init__(self, poll_s: float = 0.05):
        super().__init__()
        self.poll_s = poll_s

    @classmethod
    def from_options(cls, o: ExecutorOptions) -> PackedExecutor:
        return cls()

    @staticmethod
    def prestart(opts) -> bool:
        """Start the workers now (see ``prestart`` below): no MLflow import here, the store's URI comes
        with ``store_ready``."""
        prestart(list(opts.gpus) or [""])
        return True

    @staticmethod
    def _worker(group: list[Job], then: Path | None) -> _Worker:
        """A prestarted worker of the group's device (if alive), else a new one, with the group assigned."""
        w = next((w for w in SPARES if w.device == group[0].device and w.proc.poll() is None), None)
        if w is not None:
            SPARES.remove(w)
        else:
            w = _spawn(group[0].device)
        w.assign(group, then)
        return w

    def close(self) -> None:
        """The prestarted workers that got no job stop."""
        stop_spares()

    def _run(self, jobs: list[Job], on_change: OnChange | None) -> list[Result]:
        t0, done = time.time(), []
        plan = workers(jobs)
        followed = {after for _, _, after in plan if after}
        go = {name: Path(tempfile.mkdtemp(prefix="ddmlflow-go-")) / "go" for name in followed}
        later = [(group, after) for _, group, after in plan if after]
        running = {name: self._worker(group, go.get(name)) for name, group, after in plan if not after}

        def progress(new: list[Result]) -> None:
            done.extend(new)
            for r in new:
                self._finished(r)
            if on_change:
                on_change(progress_counts(len(jobs), done, sum(len(w.jobs) for w in running.values()), t0))

        try:
            while running or later:
                for name, w in list(running.items()):
                    if w.proc.poll() is not None:
                        del running[name]
                        progress(w.results())
                for group, after in list(later):
                    if after in running and not go[after].exists():
                        continue
                    later.remove((group, after))
                    if _cpu_only_here():
                        for j in group:
                            progress([run_here(j)])
                    else:
                        running[f"{after}-then"] = self._worker(group, None)
                if running or later:
                    time.sleep(self.poll_s)
        except BaseException:
            terminate([w.proc for w in running.values()])
            raise
        finally:  # what results() did not read and remove (Ctrl-C)
            for folder in [g.parent for g in go.values()] + [w.folder for w in running.values()]:
                shutil.rmtree(folder, ignore_errors=True)
        return done
