"""Reuse of finished steps (README "Reuse and resume"), on a real store with real runs.

A finished step is reused only when its key matches: the same parameters as
strings and the same package source. ``force`` trains anew. The step here is
a trivial function, so the tests exercise the key and the lookup, not Keras.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import mlflow
import pytest

from conftest import ROOT

# Runs one step with the ddmlflow found on PYTHONPATH; prints "<run id> <reused>".
STEP = """
import sys, mlflow
from ddmlflow import config
from ddmlflow.pipeline.full import Steps
exp, parent, epochs, force = sys.argv[1:5]
steps = Steps(config.resolve("", epochs=epochs), parent, exp, force == "1")
run_id = steps.inline("decompose", "decompose", {}, lambda: mlflow.log_metric("ran", 1))
print(run_id, "decompose" in steps.reused)
"""


def _step(package_root, exp: str, parent: str, epochs: str = "1", force: bool = False) -> tuple[str, bool]:
    """The step in this process (package_root None) or in a fresh one importing ddmlflow from package_root."""
    if package_root is None:
        from ddmlflow import config
        from ddmlflow.pipeline.full import Steps

        steps = Steps(config.resolve("", epochs=epochs), parent, exp, force)
        run_id = steps.inline("decompose", "decompose", {}, lambda: mlflow.log_metric("ran", 1))
        reused = "decompose" in steps.reused
    else:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
        env["PYTHONPATH"] = str(package_root)
        out = subprocess.run([sys.executable, "-c", STEP, exp, parent, epochs, "1" if force else "0"], env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        run_id, flag = out.stdout.split()[-2:]
        reused = flag == "True"
    assert mlflow.get_run(run_id).info.status == "FINISHED"
    return run_id, reused


@pytest.fixture
def store(mlflow_env):
    from ddmlflow.tracking import create_child, setup

    exp = setup()
    return exp, create_child(exp, None, "full", "full", "")


def test_same_key_reuses_force_and_a_changed_parameter_do_not(store):
    exp, parent = store
    first, reused = _step(None, exp, parent)
    assert not reused
    assert _step(None, exp, parent) == (first, True)
    forced, reused = _step(None, exp, parent, force=True)
    assert forced != first and not reused  # force=true: a new run, the step ran again
    assert "ran" in mlflow.get_run(forced).data.metrics
    other, reused = _step(None, exp, parent, epochs="2")
    assert other not in (first, forced) and not reused
    assert _step(None, exp, parent, epochs="2") == (other, True)


def test_changed_package_source_does_not_reuse(store, tmp_path):
    exp, parent = store
    first, _ = _step(None, exp, parent)
    copy = tmp_path / "pkg"
    shutil.copytree(ROOT / "ddmlflow", copy / "ddmlflow", ignore=shutil.ignore_patterns("__pycache__"))
    assert _step(copy, exp, parent) == (first, True)  # the same source elsewhere: the same key
    with open(copy / "ddmlflow" / "aggregate.py", "a") as f:
        f.write("\n# an edit\n")
    changed, reused = _step(copy, exp, parent)
    assert changed != first and not reused
    assert mlflow.get_run(changed).data.tags["ddmlflow.step_key"] != mlflow.get_run(first).data.tags[
        "ddmlflow.step_key"]
