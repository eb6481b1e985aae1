"""MLflow plumbing: runs as steps, lookup by step key, resumable epoch logging.

What a step key hashes is ``keys``; when a run is reused, resumed or
created is ``reuse`` (the one rule). A resumed run keeps its id, so its
checkpoints and metric history continue.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import random
import re
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from .console import say as show
from .errors import InputError
from .tags import KEY_TAG, NOTE_TAG, PARENT_TAG, REASON_TAG, RUN_NAME_TAG, STEP_TAG, SUCCESSOR_TAG


@functools.cache
def code_version() -> str:
    """Hash of the package's source files as they are (the parent's ``ddmlflow.version.code`` tag)."""
    h = hashlib.sha1()
    for p in sorted(Path(__file__).parent.rglob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def setup(experiment_name: str = "", default: str = "Default") -> str:
    """Create the store and the experiment once, in the parent, before any child starts.

    ``experiment_name`` if given, else ``MLFLOW_EXPERIMENT_ID`` / ``MLFLOW_EXPERIMENT_NAME``
    (as for ``mlflow run``), else ``default``.
    """
    if not experiment_name and os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return os.environ["MLFLOW_EXPERIMENT_ID"]
    name = experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or default
    return retry(mlflow.set_experiment, name).experiment_id


_RANDOM_NAME = re.compile(r"[a-z]+-[a-z]+-\d{1,4}")  # MLflow's generated run names, e.g. languid-cow-425


_OPENED: list[str] = []  # the top-level runs this process opened (``opened_runs``)


def opened_runs() -> list[str]:
    """The top-level runs ``open_run`` gave this process, so a failure can close them with its reason."""
    return list(_OPENED)


def open_run(
    given: str,
    experiment_name: str,
    default_experiment: str,
    name: str,
    step: str,
    tags: dict[str, str] | None = None,
    parent_id: str = "",
) -> str:
    """The top-level run to log into: ``given`` (by ``mlflow run``) or a new one in the chosen experiment.

    A run ``mlflow run`` made in the Default experiment, when nobody chose one, stays a
    launcher: the work goes to a new run in ``default_experiment`` (``ddmlflow-<dataset>``),
    and the launcher points to it (tag ``ddmlflow.successor``, description). A run made in a
    chosen experiment (``--experiment-name``, ``MLFLOW_EXPERIMENT_NAME``) is used as it is:
    the parent's experiment wins. MLflow's random run names are replaced by ``name``.
    """
    c = MlflowClient()
    if given:
        run = get_run(given)
        if (
            run.info.experiment_id != "0"
            or experiment_name == "Default"
            or (not experiment_name and os.environ.get("MLFLOW_EXPERIMENT_NAME") == "Default")
        ):
            t = {STEP_TAG: step, **(tags or {})}
            if _RANDOM_NAME.fullmatch(run.info.run_name or "") or not run.info.run_name:
                t[RUN_NAME_TAG] = name
            for k, v in t.items():
                retry(c.set_tag, given, k, v)
            _OPENED.append(given)
            return given
    exp = (
        setup(experiment_name, default_experiment)
        if not given
        else retry(mlflow.set_experiment, experiment_name or default_experiment).experiment_id
    )
    run_id = create_child(exp, parent_id or None, name, step, key="", tags=tags)
    _OPENED.append(run_id)
    if given:
        retry(c.set_tag, given, SUCCESSOR_TAG, run_id)
        retry(
            c.set_tag,
            given,
            NOTE_TAG,
            f"Launcher only: ddmlflow logged this `{step}` in experiment "
            f"`{experiment_name or default_experiment}`, run `{run_id}` "
            f"(pass `--experiment-name` to `mlflow run` to log here).",
        )
        say(
            f"logging into experiment {experiment_name or default_experiment}, run {run_id} "
            f"(the run {given} that `mlflow run` made points to it)"
        )
    return run_id


_T = TypeVar("_T")


def retry(fn: Callable[..., _T], *args: Any, attempts: int = 8, **kwargs: Any) -> _T:
    """Call ``fn``, retrying sqlite's transient 'database is locked' with jittered backoff."""
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if "locked" not in str(e).lower() or i == attempts - 1:
                raise
            time.sleep(0.05 * 2**i * (1 + random.random()))
    raise ValueError(f"retry: attempts={attempts}, at least 1 needed")


def find_run(experiment_id: str, key: str, finished_only: bool = False) -> Run | None:
    """Newest run with this step key (FINISHED first), or None."""
    runs = retry(
        MlflowClient().search_runs,
        [experiment_id],
        f"tags.`{KEY_TAG}` = '{key}'",
        order_by=["attributes.start_time DESC"],
        max_results=20,
    )
    done = [r for r in runs if r.info.status == "FINISHED"]
    if done or finished_only:
        return done[0] if done else None
    return runs[0] if runs else None


def create_child(
    experiment_id: str, parent_id: str | None, name: str, step: str, key: str, tags: dict[str, str] | None = None
) -> str:
    """Create a run without starting it here: a child process starts it by id."""
    t = {RUN_NAME_TAG: name, STEP_TAG: step, KEY_TAG: key, **(tags or {})}
    if parent_id:
        t[PARENT_TAG] = parent_id
    run_id: str = retry(MlflowClient().create_run, experiment_id, tags=t).info.run_id
    return run_id


def get_run(run_id: str, param: str = "run") -> Run:
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
def step_run(run_id: str, system_metrics: bool = False) -> Iterator[mlflow.ActiveRun]:
    """Start (or resume) a run by id; mark it FAILED with the reason on any error.

    ``system_metrics``: CPU, memory (psutil) and GPU (NVML, where installed) every
    ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` s (5 unless set), as ``system/...`` metrics.
    """
    os.environ.pop("MLFLOW_RUN_ID", None)
    run = retry(mlflow.start_run, run_id=run_id, nested=mlflow.active_run() is not None, log_system_metrics=False)
    try:
        with monitor_system([run_id] if system_metrics else []):
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


@contextlib.contextmanager
def monitor_system(run_ids: list[str]) -> Iterator[None]:
    """``system/...`` metrics (CPU, memory, disk, network; GPU through NVML) into each run while the
    block runs, every ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` s (5 unless set).

    MLflow's own monitor drops the interval a run ends in, so a training shorter than the
    interval (the coarse net) logged nothing: here each run gets at least one sample. One
    process may watch several runs (a packed group's locals); a resumed run continues its steps.
    """
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "5")
    monitors = []
    for r in run_ids:
        m = SystemMetricsMonitor(r, resume_logging=True)
        monitors.append((m, m._logging_step))
        m.start()
    try:
        yield
    finally:
        for m, first_step in monitors:
            m.finish()
            if m._logging_step == first_step:  # nothing published yet: the sample(s) taken so far
                with contextlib.suppress(Exception):
                    m.collect_metrics()
                    m.publish_metrics(m.aggregate_metrics())
                    m.mlflow_logger.flush()


def logged_steps(run_id: str, metric: str) -> set[int]:
    """Epochs already in a run's history, so a resumed run logs each epoch exactly once."""
    return {m.step for m in retry(MlflowClient().get_metric_history, run_id, metric)}


def log_params(params: dict[str, Any]) -> None:
    """Log parameters that are not there yet (a resumed run keeps its own)."""
    run = mlflow.active_run()
    assert run is not None, "log_params logs into the active run"
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
    root: str | Path | None = os.environ.get("DDMLFLOW_WORK")
    if not root:
        store = hashlib.sha1(mlflow.get_tracking_uri().encode()).hexdigest()[:12]
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ddmlflow" / "work" / store
    p = Path(root).absolute().joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p


def train_log(run_id: str) -> Path:
    """Where the process that trains run ``run_id`` prints (its folder made): a failed step names it."""
    return work_dir("logs", run_id) / "train.log"


def ui_link(experiment_id: str) -> str:
    """The runs table (the MLflow 3 UI otherwise opens on its GenAI overview page)."""
    uri = mlflow.get_tracking_uri()
    base = uri if uri.startswith("http") else "http://127.0.0.1:5000"
    hint = "" if uri.startswith("http") else f"  (start it with: mlflow ui --backend-store-uri {uri})"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning{hint}"


def say(msg: str) -> None:
    show(msg)
