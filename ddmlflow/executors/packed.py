"""The locals of one device as one program: one worker process per device.

Small local nets are dominated by per-step overhead (Python, op dispatch, tiny
kernels): on one CPU four half-width VGG3 locals trained one after another
cost ~0.9x the global net where the FLOPs allow 0.25x. This executor starts
one fresh process per device; it trains all ``train_local`` jobs pinned there
as one Keras program (``ddmlflow.packing``: one input pipeline, a branch per
local with its own weights, optimizer state and early stopping), then runs
that device's other jobs (global net, strategies) one after another in the
same process, so TensorFlow is imported and the data set loaded once. Each
local still reports into its own child run.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import Job, OnChange, Result, progress_counts
from .process import child_env, reason, terminate


def groups(jobs: list[Job]) -> dict[str, list[Job]]:
    """Jobs by device, in job order."""
    out: dict[str, list[Job]] = {}
    for j in jobs:
        out.setdefault(j.device, []).append(j)
    return out


class PackedExecutor:
    """One worker per device, all devices at once (on the CPU: one worker)."""

    def __init__(self, poll_s: float = 0.5):
        self.poll_s = poll_s

    def run(self, jobs: list[Job], on_change: OnChange | None = None) -> list[Result]:
        t0, done = time.time(), []
        running = {device: (group, *self._start(device, group)) for device, group in groups(jobs).items()}
        try:
            while running:
                for device, (group, proc, status, start) in list(running.items()):
                    if proc.poll() is None:
                        continue
                    done += self._results(group, proc.returncode, status, time.time() - start)
                    del running[device]
                    if on_change:
                        on_change(progress_counts(len(jobs), done, sum(len(g) for g, *_ in running.values()), t0))
                time.sleep(self.poll_s)
        except BaseException:
            terminate([p for _, p, _, _ in running.values()])
            raise
        order = {id(j): i for i, j in enumerate(jobs)}
        return sorted(done, key=lambda r: order[id(r.job)])

    def _start(self, device: str, group: list[Job]):
        spec = Path(tempfile.mkdtemp(prefix="ddmlflow-group-")) / "jobs.json"
        status = spec.with_name("status.json")
        spec.write_text(json.dumps([{"step": j.step, "name": j.name, "run_id": j.run_id, "inputs": j.inputs,
                                     "config": j.config.params()} for j in group]))
        log = group[0].log
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "ddmlflow.executors.worker", str(spec), str(status)],
                                    env=child_env(device, group[0].env), stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        return proc, status, time.time()

    @staticmethod
    def _results(group: list[Job], returncode: int, status: Path, elapsed: float) -> list[Result]:
        """Each job's outcome as the worker recorded it; what it never reached failed with the worker."""
        seen = json.loads(status.read_text()) if status.exists() else {}
        why = reason(returncode, group[0].log) if returncode != 0 else "the worker ended before this job"
        return [Result(j, seen[j.run_id]["ok"], seen[j.run_id]["reason"], elapsed) if j.run_id in seen
                else Result(j, False, why, elapsed) for j in group]

