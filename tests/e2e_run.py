"""The one tiny `mlflow run . -e full` that the end-to-end tests share (the session fixture ``e2e`` in
conftest runs it once), and how they read it back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

TINY = {
    "n_train": "96",
    "n_val": "48",
    "epochs": "2",
    "coarse_epochs": "3",
    "gpus": "0,1",
    "max_parallel": "2",
    "registered_model_name": "e2e-shapes",
}


def mlflow_run(env, cwd, params: dict, entry="full") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", entry, "--env-manager", "local"]
    for k, v in params.items():
        cmd += ["-P", f"{k}={v}"]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


EXP = "ddmlflow-shapes2d"  # the experiment `full` logs into; `mlflow run`'s own run stays in Default as a launcher


def exp_id(client) -> str:
    return client.get_experiment_by_name(EXP).experiment_id


def runs_by_name(client, parent_id: str) -> dict:
    runs = client.search_runs([exp_id(client)], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    return {r.info.run_name: r for r in runs}


def parent_of(client):
    parents = [
        r
        for r in client.search_runs([exp_id(client)], order_by=["attributes.start_time ASC"])
        if "mlflow.parentRunId" not in r.data.tags
    ]
    return parents


def store_env(tmp: Path, **extra: str) -> dict[str, str]:
    """This process's environment for a subprocess that uses a store, work folder and cache of its own in
    ``tmp`` (no MLFLOW_ variable inherited), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}",
        DDMLFLOW_WORK=str(tmp / "work"),
        DDMLFLOW_CACHE=str(tmp / "cache"),
        TF_CPP_MIN_LOG_LEVEL="2",
        **extra,
    )
    return env
