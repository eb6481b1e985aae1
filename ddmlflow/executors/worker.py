"""The one worker entry point: every job an executor starts in a fresh process runs here.

``python -m ddmlflow.executors.worker --job JSON`` runs one job (``Job.to_json``: step, run id, inputs,
the typed config) into its run: the process executor's child, for trainings and tuner searches alike.
It ends with the job's outcome as the last line of its output (the executor's reason) and exit code 1.

``python -m ddmlflow.executors.worker FOLDER`` is the packed executor's worker. It imports TensorFlow, Keras and the training steps first, opens the tracking
store once the driver says it exists (``FOLDER/ready``, or the spec: both
name the driver's store, which may have been set in Python), then
waits for ``FOLDER/spec.json`` (its jobs, its log, and the file to create once
its packed groups are trained): so a worker started before its jobs are known
(``packed.prestart``) spends that time importing, not idle. It trains the ``train_local`` jobs as one packed program,
then runs the other jobs one after another, each into its own run, and
records every job's outcome in ``FOLDER/status.json`` as it goes, so the
driver knows which finished even when the worker is killed. A worker that
trains only packed groups uses the packed engine's CPU threads (set after the
imports, before TensorFlow runs an op). It exits when its driver does.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from ..config import to_json
from ..devices import watch_driver
from .base import Job, attempt, thread_policy

SPEC, STATUS, LOG, READY = "spec.json", "status.json", "worker.log", "ready"


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _import() -> None:
    """What every job needs, before the job is known (~10 s)."""
    import importlib

    for module in ("tensorflow", "keras", "ddmlflow.pipeline.train"):
        importlib.import_module(module)


def _connect(folder: Path) -> None:
    """Open the driver's tracking store (~1 s: SQLAlchemy's models and the schema check)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from ..tracking import retry  # lazy: MLflow; the parent's prestart imports this module first

    said = folder / (READY if (folder / READY).exists() else SPEC)  # both written atomically
    uri = json.loads(said.read_text()).get("tracking_uri")
    if uri:
        os.environ["MLFLOW_TRACKING_URI"] = uri
        mlflow.set_tracking_uri(uri)
    retry(MlflowClient().search_experiments, max_results=1)


def _wait_for(folder: Path, names: tuple[str, ...], driver: int) -> None:
    """Until one of these files exists in ``folder``; exit if the driver is gone."""
    while not any((folder / n).exists() for n in names):
        if os.getppid() != driver:
            sys.exit(3)
        time.sleep(0.05)


def _to_job_log(folder: Path, log: str) -> None:
    """From now on write into the job's log, starting with what the warm-up printed."""
    sys.stdout.flush()
    sys.stderr.flush()
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    warm = folder / LOG
    if warm.exists():
        os.write(fd, warm.read_bytes())
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main(folder_name: str) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    folder, driver = Path(folder_name), os.getppid()
    watch_driver()  # stop with the driver, also while training
    _import()
    _wait_for(folder, (READY, SPEC), driver)
    _connect(folder)
    _wait_for(folder, (SPEC,), driver)
    spec = json.loads((folder / SPEC).read_text())  # written atomically by the driver
    _to_job_log(folder, spec["log"])

    from ..tracking import say  # lazy: MLflow; the parent's prestart imports this module first

    jobs, then, status = [Job.from_json(j) for j in spec["jobs"]], spec.get("then", ""), folder / STATUS
    seen: dict[str, dict] = {}

    def record(run_ids, ok: bool, why: str = "") -> None:
        for r in run_ids:
            seen[r] = {"ok": ok, "reason": why}
        status.write_text(json.dumps(seen))

    groups: dict[str, list[Job]] = {}  # locals with the same config pack together (tuned ones may differ)
    for j in (j for j in jobs if j.step == "train_local"):
        groups.setdefault(to_json(j.config), []).append(j)
    if any(len(g) > 1 for g in groups.values()) and all(j.step == "train_local" for j in jobs):
        from ..packed_training import configure_threads  # lazy: TensorFlow; the `full` parent imports this module

        configure_threads()  # before any TensorFlow op
    for k, local in enumerate(groups.values()):
        from ..pipeline.train import train_locals_packed  # lazy: TensorFlow; the `full` parent imports this module

        ids = [j.run_id for j in local]
        last = then if k == len(groups) - 1 else ""
        try:
            train_locals_packed(
                local[0].config,
                local[0].inputs["decompose_run"],
                [j.inputs["box"] for j in local],
                ids,
                on_trained=(lambda last=last: Path(last).touch()) if last else None,
            )
            record(ids, True)
        except Exception as e:  # noqa: BLE001 - the group failed; the driver marks its runs
            say(f"packed group failed: {type(e).__name__}: {e}")
            record(ids, False, f"{type(e).__name__}: {e}")
    for j in (j for j in jobs if j.step != "train_local"):  # a failed one does not stop the others
        why = attempt(j.step, j.run_id, j.config, j.inputs)
        record([j.run_id], not why, why)
    return 0


def run_job(text: str) -> int:
    """``--job JSON``: one job into its run (FAILED with the reason on an error), in this fresh process."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    watch_driver()  # stop with the driver, also while training
    job = Job.from_json(text)
    thread_policy(job)
    why = attempt(job.step, job.run_id, job.config, job.inputs)
    if why:
        print(f"error: {why}", file=sys.stderr, flush=True)  # the last log line: the executor's reason
    return 1 if why else 0


if __name__ == "__main__":
    code = run_job(sys.argv[2]) if sys.argv[1] == "--job" else main(sys.argv[1])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # every run is closed and STATUS written: skip TensorFlow's ~1-2 s teardown
