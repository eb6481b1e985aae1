"""MLflow plumbing: runs as steps, reuse of finished steps, resumable epoch logging.

A step is identified by a *step key*: a hash of its name, its parameters as
strings (MLflow stores parameters as strings, so we compare strings) and the
code version. Rerunning ``full`` with the same key reuses a FINISHED run and
resumes an unfinished one in place (same run id, so its checkpoints and
metric history continue).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Iterator

import mlflow
from mlflow.tracking import MlflowClient

from .errors import InputError

PARENT_TAG = "mlflow.parentRunId"
KEY_TAG = "ddmlflow.step_key"
STEP_TAG = "ddmlflow.step"
REASON_TAG = "failure_reason"


@functools.cache
def code_version() -> str:
    """Hash of the package's source, so changed code never reuses stale runs (once per process)."""
    h = hashlib.sha1()
    for p in sorted(Path(__file__).parent.rglob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def step_key(step: str, params: dict) -> str:
    blob = json.dumps({"step": step, "code": code_version(), **{k: str(v) for k, v in params.items()}},
                      sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def setup() -> str:
    """Create the store and the experiment once, in the parent, before any child starts.

    ``MLFLOW_EXPERIMENT_NAME`` / ``MLFLOW_EXPERIMENT_ID`` choose it, as for ``mlflow run``;
    otherwise MLflow's Default experiment, where ``mlflow run`` puts its runs too.
    """
    if os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return os.environ["MLFLOW_EXPERIMENT_ID"]
    exp = retry(mlflow.set_experiment, os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default")
    return exp.experiment_id


def retry(fn, *args, attempts: int = 8, **kwargs):
    """Call ``fn``, retrying sqlite's transient 'database is locked' with jittered backoff."""
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - MLflow wraps the sqlite error in several types
            if "locked" not in str(e).lower() or i == attempts - 1:
                raise
            time.sleep(0.05 * 2 ** i * (1 + random.random()))


def find_run(experiment_id: str, key: str, finished_only: bool = False):
    """Newest run with this step key (FINISHED first), or None."""
    runs = retry(MlflowClient().search_runs, [experiment_id], f"tags.`{KEY_TAG}` = '{key}'",
                 order_by=["attributes.start_time DESC"], max_results=20)
    done = [r for r in runs if r.info.status == "FINISHED"]
    if done or finished_only:
        return done[0] if done else None
    return runs[0] if runs else None


def create_child(experiment_id: str, parent_id: str | None, name: str, step: str, key: str,
                 tags: dict | None = None) -> str:
    """Create a run without starting it here: a child process starts it by id."""
    t = {"mlflow.runName": name, STEP_TAG: step, KEY_TAG: key, **(tags or {})}
    if parent_id:
        t[PARENT_TAG] = parent_id
    return retry(MlflowClient().create_run, experiment_id, tags=t).info.run_id


def get_run(run_id: str, param: str = "run"):
    try:
        return MlflowClient().get_run(run_id)
    except Exception:  # noqa: BLE001
        raise InputError(param, run_id, "the id of an existing MLflow run in this tracking store") from None


def end_run(run_id: str, status: str, reason: str | None = None) -> None:
    c = MlflowClient()
    if reason:
        retry(c.set_tag, run_id, REASON_TAG, reason[:4000])
    retry(c.set_terminated, run_id, status)


@contextlib.contextmanager
def step_run(run_id: str) -> Iterator[mlflow.ActiveRun]:
    """Start (or resume) a run by id; mark it FAILED with the reason on any error."""
    os.environ.pop("MLFLOW_RUN_ID", None)
    run = retry(mlflow.start_run, run_id=run_id, nested=mlflow.active_run() is not None)
    try:
        yield run
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException as e:
        reason = str(e) if isinstance(e, InputError) else f"{type(e).__name__}: {e}"
        with contextlib.suppress(Exception):
            mlflow.set_tag(REASON_TAG, reason[:4000])
            mlflow.log_text(traceback.format_exc(), "traceback.txt")
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


def logged_steps(run_id: str, metric: str) -> set[int]:
    """Epochs already in a run's history, so a resumed run logs each epoch exactly once."""
    return {m.step for m in retry(MlflowClient().get_metric_history, run_id, metric)}


def log_params(params: dict) -> None:
    """Log parameters that are not there yet (a resumed run keeps its own)."""
    run = mlflow.active_run()
    have = retry(MlflowClient().get_run, run.info.run_id).data.params
    new = {k: str(v)[:6000] for k, v in params.items() if k not in have}
    if new:
        retry(mlflow.log_params, new)


def is_local_store(uri: str) -> bool:
    """A tracking store only this machine can write (sqlite, a folder): no use to workers elsewhere."""
    from urllib.parse import urlparse

    scheme = urlparse(uri).scheme.lower()
    return (scheme in ("", "file", "sqlite") or len(scheme) == 1) and uri != "databricks"  # 1 letter: a Windows drive


def work_dir(*parts: str) -> Path:
    """Scratch space keyed by run: checkpoints, downloaded inputs.

    ``$DDMLFLOW_WORK``, else a per-user folder keyed by the tracking store
    (``$XDG_CACHE_HOME`` or ~/.cache, then ddmlflow/work/<hash of the URI>): not the
    current folder, which ``mlflow run <git URL>`` makes a fresh clone each time, so a
    rerun after a crash finds its checkpoints; two stores never share run folders.
    """
    root = os.environ.get("DDMLFLOW_WORK")
    if not root:
        store = hashlib.sha1(mlflow.get_tracking_uri().encode()).hexdigest()[:12]
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ddmlflow" / "work" / store
    p = Path(root).absolute().joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p


def ui_link(experiment_id: str) -> str:
    """The runs table (the MLflow 3 UI otherwise opens on its GenAI overview page)."""
    uri = mlflow.get_tracking_uri()
    base = uri if uri.startswith("http") else "http://127.0.0.1:5000"
    hint = "" if uri.startswith("http") else f"  (start it with: mlflow ui --backend-store-uri {uri})"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning{hint}"


def say(msg: str) -> None:
    print(f"[ddmlflow] {msg}", file=sys.stderr, flush=True)
