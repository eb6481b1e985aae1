"""Shared fixtures: every test gets its own MLflow store and work folder, never the user's."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import ddmlflow  # noqa: F401 - its CPU-kernel default (devices.use_onednn), before a test imports TensorFlow

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
# The papers' text and the real data sets: ../shared beside the checkout, or the folder DDMLFLOW_SHARED names.
SHARED = Path(os.environ.get("DDMLFLOW_SHARED") or ROOT.parent / "shared")
SHARED_DATA = SHARED / "data"


def use_store(mp: pytest.MonkeyPatch, uri: str, folder: Path) -> None:
    """Point MLflow and ddmlflow at ``uri`` with work folder and data cache in ``folder``; no inherited run."""
    import mlflow

    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.setenv("DDMLFLOW_WORK", str(folder / "work"))
    mp.setenv("DDMLFLOW_CACHE", str(folder / "cache"))
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        mp.delenv(var, raising=False)
    mlflow.set_tracking_uri(uri)


@pytest.fixture(autouse=True)
def _environment_restored():
    """Each test leaves os.environ and MLflow's active experiment as it found them: in-process runs
    (``mlflow.set_experiment``) export MLFLOW_EXPERIMENT_ID, which a later test's subprocess would log
    into, and make an experiment of their own store active, which a later test's ``mlflow.start_run`` in
    another store would ask for ("No Experiment with id=1 exists")."""
    before = dict(os.environ)
    yield
    if os.environ != before:
        os.environ.clear()
        os.environ.update(before)
    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is not None:
        fluent._active_experiment_id = None


@pytest.fixture
def mlflow_env(tmp_path, monkeypatch):
    """A fresh sqlite store, work folder and data cache in tmp_path; cwd is tmp_path."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    use_store(monkeypatch, uri, tmp_path)
    mlflow.MlflowClient().search_experiments()  # create the store now: concurrent creation corrupts it
    mlflow.set_experiment(experiment_id="0")  # not the experiment an earlier test made active in its own store
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)  # set_experiment exports it; ddmlflow would obey it
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


@contextlib.contextmanager
def mlflow_server(folder: Path):
    """`mlflow server` on 127.0.0.1 (sqlite backend in ``folder``, artifacts through the server); its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{folder / 'm.db'}",
            "--artifacts-destination",
            str(folder / "art"),
            "--workers",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "server.log", "wb"),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:  # until it answers (or has died)
            try:
                if urllib.request.urlopen(url + "/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
            assert proc.poll() is None, (folder / "server.log").read_text()[-2000:]
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, payload) -> tuple[int, str]:
    req = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@contextlib.contextmanager
def served(model_uri: str, env: dict[str, str], cwd: Path | None = None) -> Iterator[str]:
    """`mlflow models serve` of ``model_uri`` on 127.0.0.1 while the block runs; its base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
    proc = subprocess.Popen(
        [*cmd, "--host", "127.0.0.1", "-p", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(url + "/ping", timeout=2)
                break
            except OSError:
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def predict_two_step(local_models, coarse, decomposition, x, batch_size: int = 256):
    """The CNN-DNN the long way: each local on its crop, then the coarse net on their outputs."""
    from ddmlflow.inference import predict_probs
    from ddmlflow.models.cnn_dnn import coarse_features

    probs = [predict_probs(m, decomposition.crop(x, i), batch_size) for i, m in enumerate(local_models)]
    return predict_probs(coarse, coarse_features(probs), batch_size)


def experiment_ids(client) -> list[str]:
    """Every experiment of the store: runs go to ddmlflow-<dataset> (and `mlflow run` launchers to Default)."""
    return [e.experiment_id for e in client.search_experiments()]


@pytest.fixture(scope="session")
def _e2e_full_run(tmp_path_factory):
    """The tiny `mlflow run . -e full` of ``e2e_run.TINY``, once per session, in a store of its own."""
    from e2e_run import TINY, mlflow_run, store_env

    tmp = tmp_path_factory.mktemp("e2e")
    env = store_env(tmp)
    first = mlflow_run(env, tmp, TINY)
    assert first.returncode == 0, first.stderr[-3000:]
    return {"tmp": tmp, "env": env, "first": first}


@pytest.fixture
def e2e(_e2e_full_run):
    """That run's store, made MLflow's (tests in between point MLflow at their own), and a client of it."""
    import mlflow

    mlflow.set_tracking_uri(_e2e_full_run["env"]["MLFLOW_TRACKING_URI"])
    return {**_e2e_full_run, "client": mlflow.MlflowClient()}
