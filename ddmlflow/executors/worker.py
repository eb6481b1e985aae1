"""The worker process of the packed executor: ``python -m ddmlflow.executors.worker JOBS STATUS``.

Trains the ``train_local`` jobs as one packed program, then runs the other
jobs one after another, each into its own run, and records every job's
outcome in STATUS (JSON) as it goes, so the driver knows which finished
even when the worker is killed.
"""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(spec: str, status: str) -> int:
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
    if any(len(g) > 1 for g in groups.values()):
        from ..packing import configure_threads

        configure_threads()  # before any TensorFlow op; the device's other jobs share these threads
    for local in groups.values():
        from ..pipeline.packed import train_locals_packed

        ids = [j["run_id"] for j in local]
        try:
            train_locals_packed(local[0]["cfg"], local[0]["inputs"]["decompose_run"],
                                [j["inputs"]["box"] for j in local], ids)
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
    sys.exit(main(*sys.argv[1:3]))
