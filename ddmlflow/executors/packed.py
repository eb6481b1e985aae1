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

On the CPU the packed locals run best with one thread per op and the branches
side by side (``packing.configure_threads``), while a big net (the global one)
wants TensorFlow's default threads (2D VGG3 ~10 %, 3D CNN ~40 % slower with one
thread per op). Threads are fixed when TensorFlow starts, so there the device's
other jobs get a second worker, started at once so that its imports overlap the
packed training. It starts training when the packed worker has trained its
groups (while that one logs their models and probabilities) or has ended: one
training at a time on the device, as before.
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


def workers(jobs: list[Job]) -> list[tuple[str, list[Job], str | None]]:
    """(name, jobs, name of the worker to wait for) per worker: one per device; on the CPU
    (device '') a second one for the non-local jobs when two or more locals are packed."""
    out = []
    for device, group in groups(jobs).items():
        local = [j for j in group if j.step == "train_local"]
        other = [j for j in group if j.step != "train_local"]
        if device == "" and len(local) > 1 and other:
            out += [("cpu-packed", local, None), ("cpu-other", other, "cpu-packed")]
        else:
            out.append((device or "cpu", group, None))
    return out


class PackedExecutor:
    """One worker per device, all devices at once (on the CPU: one worker)."""

    def __init__(self, poll_s: float = 0.2):
        self.poll_s = poll_s

    def run(self, jobs: list[Job], on_change: OnChange | None = None) -> list[Result]:
        t0, done = time.time(), []
        plan = workers(jobs)
        go = {name: Path(tempfile.mkdtemp(prefix=f"ddmlflow-{name}-")) / "go" for name, _, _ in plan}
        waiting = {after: name for name, _, after in plan if after is not None}
        running = {name: (group, *self._start(go[name].parent, group, go[name] if after else None,
                                              go[waiting[name]] if name in waiting else None))
                   for name, group, after in plan}
        try:
            while running:
                for name, (group, proc, status, start) in list(running.items()):
                    if proc.poll() is None:
                        continue
                    done += self._results(group, proc.returncode, status, time.time() - start)
                    del running[name]
                    if name in waiting:  # its follower may train now (whatever the outcome)
                        go[waiting[name]].touch()
                    if on_change:
                        on_change(progress_counts(len(jobs), done, sum(len(g) for g, *_ in running.values()), t0))
                time.sleep(self.poll_s)
        except BaseException:
            terminate([p for _, p, _, _ in running.values()])
            raise
        order = {id(j): i for i, j in enumerate(jobs)}
        return sorted(done, key=lambda r: order[id(r.job)])

    def _start(self, folder: Path, group: list[Job], wait_for: Path | None, then: Path | None):
        spec, status = folder / "jobs.json", folder / "status.json"
        spec.write_text(json.dumps([{"step": j.step, "name": j.name, "run_id": j.run_id, "inputs": j.inputs,
                                     "config": j.config.params()} for j in group]))
        log = group[0].log
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "ddmlflow.executors.worker", str(spec), str(status),
                                     *(["--wait-for", str(wait_for)] if wait_for else []),
                                     *(["--then", str(then)] if then else [])],
                                    env=child_env(group[0].device, group[0].env), stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        return proc, status, time.time()

    @staticmethod
    def _results(group: list[Job], returncode: int, status: Path, elapsed: float) -> list[Result]:
        """Each job's outcome as the worker recorded it; what it never reached failed with the worker."""
        seen = json.loads(status.read_text()) if status.exists() else {}
        why = reason(returncode, group[0].log) if returncode != 0 else "the worker ended before this job"
        return [Result(j, seen[j.run_id]["ok"], seen[j.run_id]["reason"], elapsed) if j.run_id in seen
                else Result(j, False, why, elapsed) for j in group]

