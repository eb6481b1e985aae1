"""The worker process of the packed executor: ``python -m ddmlflow.executors.worker JOBS STATUS [--wait-for GO] [--then GO]``.

Trains the ``train_local`` jobs as one packed program, then runs the other
jobs one after another, each into its own run, and records every job's
outcome in STATUS (JSON) as it goes, so the driver knows which finished
even when the worker is killed. With ``--wait-for GO`` it imports TensorFlow,
then waits for that file before its first job; with ``--then GO`` it creates
the file once its packed groups are trained (before logging their models and
probabilities), and the driver creates it anyway when the worker ends. A
worker that trains only packed groups uses the packed engine's CPU threads.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _wait_for(go: str) -> None:
    import importlib
    import time

    for module in ("tensorflow", "keras", "ddmlflow.pipeline.train"):
        importlib.import_module(module)
    while not Path(go).exists():
        time.sleep(0.1)


def main(spec: str, status: str, wait_for: str = "", then: str = "") -> int:
    from ..config import resolve
    from ..steps import STEPS
    from ..tracking import say, step_run, trains

    signal.signal(signal.SIGTERM, _on_sigterm)
    jobs = json.loads(Path(spec).read_text())
    for j in jobs:
        params = dict(j["config"])
        j["cfg"] = resolve(params.pop("preset"), **params)
    seen: dict[str, dict] = {}

    def record(run_ids, ok: bool, why: str = "") -> None:
        for r in run_ids:
            seen[r] = {"ok": ok, "reason": why}
        Path(status).write_text(json.dumps(seen))

    groups: dict[str, list[dict]] = {}  # locals with the same config pack together (tuned ones may differ)
    for j in (j for j in jobs if j["step"] == "train_local"):
        groups.setdefault(json.dumps(j["config"], sort_keys=True), []).append(j)
    if any(len(g) > 1 for g in groups.values()) and all(j["step"] == "train_local" for j in jobs):
        from ..packing import configure_threads

        configure_threads()  # before any TensorFlow op
    if wait_for:
        _wait_for(wait_for)
    for k, local in enumerate(groups.values()):
        from ..pipeline.packed import train_locals_packed

        ids = [j["run_id"] for j in local]
        last = then if k == len(groups) - 1 else ""
        try:
            train_locals_packed(local[0]["cfg"], local[0]["inputs"]["decompose_run"],
                                [j["inputs"]["box"] for j in local], ids,
                                on_trained=(lambda: Path(last).touch()) if last else None)
            record(ids, True)
        except Exception as e:  # noqa: BLE001 - the group failed; the driver marks its runs
            say(f"packed group failed: {type(e).__name__}: {e}")
            record(ids, False, f"{type(e).__name__}: {e}")
    for j in (j for j in jobs if j["step"] != "train_local"):
        try:
            with step_run(j["run_id"], system_metrics=trains(j["step"])):
                STEPS[j["step"]].call(j["cfg"], **j["inputs"])
            record([j["run_id"]], True)
        except Exception as e:  # noqa: BLE001 - step_run marked the run FAILED; go on with the others
            record([j["run_id"]], False, f"{type(e).__name__}: {e}")
    return 0


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("status")
    ap.add_argument("--wait-for", default="")
    ap.add_argument("--then", default="")
    a = ap.parse_args()
    code = main(a.spec, a.status, a.wait_for, a.then)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # every run is closed and STATUS written: skip TensorFlow's ~1-2 s teardown
