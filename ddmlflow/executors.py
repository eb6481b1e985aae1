"""Fan-out of local trainings: "train these locals, report each as its own child run".

``LocalProcessExecutor`` starts one fresh OS process per local (never a fork
after TensorFlow ran: that hangs), with ``CUDA_VISIBLE_DEVICES`` set before
TensorFlow is imported, at most ``jobs_per_gpu`` per GPU (or ``max_parallel``
on the CPU). A failing job does not stop the others. Ctrl-C terminates all.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class Job:
    name: str                      # e.g. "train_local/03"
    argv: list[str]                # the command, run with this interpreter's environment
    device: str                    # CUDA_VISIBLE_DEVICES for it ('' = CPU)
    log: Path                      # stdout+stderr go here
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    job: Job
    returncode: int
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def reason(self) -> str:
        """The last line of the job's log, or the signal that killed it."""
        if self.returncode < 0:
            sig = signal.Signals(-self.returncode).name
            hint = " (out of memory?)" if sig == "SIGKILL" else ""
            return f"killed by {sig}{hint}"
        lines = [ln for ln in self.job.log.read_text(errors="replace").splitlines() if ln.strip()] \
            if self.job.log.exists() else []
        return lines[-1] if lines else f"exit code {self.returncode}"


def child_env(device: str, extra: dict[str, str]) -> dict[str, str]:
    """A clean environment: pinned device, no inherited MLflow run (it would resume the parent)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID",)}
    env["CUDA_VISIBLE_DEVICES"] = device
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra)
    return env


class LocalProcessExecutor:
    def __init__(self, jobs_per_device: int = 1, max_parallel: int = 1, poll_s: float = 0.5):
        self.jobs_per_device, self.max_parallel, self.poll_s = jobs_per_device, max_parallel, poll_s

    def _capacity(self, device: str) -> int:
        return self.jobs_per_device if device else self.max_parallel

    def run(self, jobs: list[Job], on_change: Callable[[dict], None] | None = None) -> list[Result]:
        pending, running, done = list(jobs), {}, []
        t0 = time.time()

        def report():
            if on_change:
                on_change({"done": sum(r.ok for r in done), "failed": sum(not r.ok for r in done),
                           "running": len(running), "pending": len(pending), "elapsed_s": time.time() - t0})
        try:
            while pending or running:
                changed = False
                for job in list(pending):
                    busy = sum(1 for j in running.values() if j[0].device == job.device)
                    if busy < self._capacity(job.device):
                        job.log.parent.mkdir(parents=True, exist_ok=True)
                        with open(job.log, "ab") as fh:
                            proc = subprocess.Popen(job.argv, env=child_env(job.device, job.env), stdout=fh,
                                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                    start_new_session=True)
                        running[proc.pid] = (job, proc, time.time())
                        pending.remove(job)
                        changed = True
                for pid, (job, proc, start) in list(running.items()):
                    if proc.poll() is not None:
                        done.append(Result(job, proc.returncode, time.time() - start))
                        del running[pid]
                        changed = True
                if changed:
                    report()
                time.sleep(self.poll_s)
        except BaseException:
            terminate([p for _, p, _ in running.values()])
            raise
        order = {j.name: i for i, j in enumerate(jobs)}
        return sorted(done, key=lambda r: order[r.job.name])


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


def python_argv(*args: str) -> list[str]:
    """Run a ddmlflow subcommand with this interpreter (works in venvs and `mlflow run`)."""
    return [sys.executable, "-m", "ddmlflow.cli", *args]
