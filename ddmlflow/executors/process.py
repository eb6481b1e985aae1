"""One fresh OS process per job (never a fork after TensorFlow ran: that hangs).

``CUDA_VISIBLE_DEVICES`` is set before TensorFlow is imported, at most
``jobs_per_device`` jobs run on one GPU at once (``max_parallel`` on the CPU).
A failing job does not stop the others; Ctrl-C terminates all of them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..console import VERBOSE_ENV
from ..devices import DRIVER_ENV
from .base import Executor, ExecutorOptions, Job, OnChange, Result, progress_counts, tracking_env


def child_env(device: str, tracking: bool = True) -> dict[str, str]:
    """A clean environment: pinned device, the driver's tracking store (``tracking``: MLflow is imported
    for it), no inherited MLflow run (it would resume the parent)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    env["CUDA_VISIBLE_DEVICES"] = device
    env[DRIVER_ENV] = str(os.getpid())  # the child stops when this process is gone (devices.watch_driver)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env[VERBOSE_ENV] = "true"  # its output goes to its log file: all of it (Keras' epoch lines too)
    if tracking:
        env.update(tracking_env())
    return env


def command(job: Job) -> list[str]:
    """The job for the one worker entry point, run by this interpreter (works in venvs and `mlflow run`)."""
    return [sys.executable, "-m", "ddmlflow.executors.worker", "--job", job.to_json()]


def reason(returncode: int, log) -> str:
    """The last line of the job's log, or the signal that killed it."""
    if returncode < 0:
        sig = signal.Signals(-returncode).name
        return f"killed by {sig}" + (" (out of memory?)" if sig == "SIGKILL" else "")
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log and log.exists() else []
    return lines[-1] if lines else f"exit code {returncode}"


class ProcessExecutor(Executor):
    """``command``: how a job becomes a process (default: the worker entry point; tests run plain code)."""

    def __init__(
        self,
        jobs_per_device: int = 1,
        max_parallel: int = 1,
        poll_s: float = 0.5,
        command: Callable[[Job], list[str]] = command,
    ):
        super().__init__()
        self.jobs_per_device, self.max_parallel, self.poll_s = jobs_per_device, max_parallel, poll_s
        self.command = command

    @classmethod
    def from_options(cls, o: ExecutorOptions) -> ProcessExecutor:
        return cls(jobs_per_device=o.jobs_per_gpu, max_parallel=o.max_parallel)

    def _capacity(self, device: str) -> int:
        return self.jobs_per_device if device else self.max_parallel

    def _run(self, jobs: list[Job], on_change: OnChange | None) -> list[Result]:
        pending, done = list(jobs), []
        running: dict[int, tuple[Job, subprocess.Popen[bytes], float]] = {}  # pid -> job, process, start time
        t0 = time.time()
        try:
            while pending or running:
                changed = False
                for job in list(pending):
                    busy = sum(1 for j, _, _ in running.values() if j.device == job.device)
                    if busy < self._capacity(job.device):
                        log = Path(job.log or os.devnull)
                        log.parent.mkdir(parents=True, exist_ok=True)
                        with open(log, "ab") as fh:
                            proc = subprocess.Popen(
                                self.command(job),
                                env=child_env(job.device),
                                stdout=fh,
                                stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL,
                                start_new_session=True,
                            )
                        running[proc.pid] = (job, proc, time.time())
                        pending.remove(job)
                        changed = True
                for pid, (job, proc, start) in list(running.items()):
                    if proc.poll() is not None:
                        ok = proc.returncode == 0
                        done.append(
                            Result(job, ok, "" if ok else reason(proc.returncode, job.log), time.time() - start)
                        )
                        self._finished(done[-1])
                        del running[pid]
                        changed = True
                if changed and on_change:
                    on_change(progress_counts(len(jobs), done, len(running), t0))
                time.sleep(self.poll_s)
        except BaseException:
            terminate([p for _, p, _ in running.values()])
            raise
        return done


def terminate(procs: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """SIGTERM each process group, then SIGKILL what is left after ``grace_s``."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
