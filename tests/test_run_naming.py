"""Where runs go and what they are called (issue 15), without training: real store, real runs."""

from __future__ import annotations

import numpy as np
import pytest


def _cfg(**kw):
    from ddmlflow.config import resolve

    return resolve(**kw)


def test_parent_name_and_experiment_come_from_the_configuration():
    from ddmlflow import describe

    cfg = _cfg(decomposition="3x3", overlap="2")
    assert describe.parent_name(cfg) == "shapes2d-vgg3-3x3-d2"
    assert describe.experiment_name(cfg) == "ddmlflow-shapes2d"
    assert describe.parent_name(_cfg(decomposition='[{"start": [0, 0], "stop": [32, 32]}]')).endswith("-custom-d0")


def test_new_run_goes_to_the_default_named_experiment_or_the_chosen_one(mlflow_env, monkeypatch):
    import mlflow

    from ddmlflow.tracking import open_run

    c = mlflow.MlflowClient()
    rid = open_run("", "", "ddmlflow-shapes2d", "shapes2d-vgg3-2x2-d0", "full")
    assert c.get_experiment(c.get_run(rid).info.experiment_id).name == "ddmlflow-shapes2d"
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)  # mlflow.set_experiment exported it
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    rid = open_run("", "", "ddmlflow-shapes2d", "x", "full")
    assert c.get_experiment(c.get_run(rid).info.experiment_id).name == "from-env"
    rid = open_run("", "chosen", "ddmlflow-shapes2d", "x", "full")  # the option beats the environment
    assert c.get_experiment(c.get_run(rid).info.experiment_id).name == "chosen"


def test_a_run_made_by_mlflow_run_in_a_chosen_experiment_is_used_and_renamed(mlflow_env):
    import mlflow

    from ddmlflow.tracking import open_run

    c = mlflow.MlflowClient()
    exp = c.create_experiment("picked-by-mlflow-run")
    given = c.create_run(exp, run_name="languid-cow-425").info.run_id  # what `mlflow run --experiment-name` makes
    assert open_run(given, "", "ddmlflow-shapes2d", "shapes2d-vgg3-2x2-d0", "full") == given
    assert c.get_run(given).info.run_name == "shapes2d-vgg3-2x2-d0"
    named = c.create_run(exp, run_name="my-own-name").info.run_id  # `mlflow run --run-name` keeps its name
    open_run(named, "", "ddmlflow-shapes2d", "shapes2d-vgg3-2x2-d0", "full")
    assert c.get_run(named).info.run_name == "my-own-name"


def test_a_run_made_by_plain_mlflow_run_in_default_becomes_a_launcher(mlflow_env):
    import mlflow

    from ddmlflow.tracking import open_run

    c = mlflow.MlflowClient()
    given = c.create_run("0", run_name="languid-cow-425").info.run_id
    rid = open_run(given, "", "ddmlflow-shapes2d", "shapes2d-vgg3-2x2-d0", "full")
    assert rid != given
    run = c.get_run(rid)
    assert c.get_experiment(run.info.experiment_id).name == "ddmlflow-shapes2d"
    assert run.info.run_name == "shapes2d-vgg3-2x2-d0"
    launcher = c.get_run(given).data.tags
    assert launcher["ddmlflow.successor"] == rid and rid in launcher["mlflow.note.content"]


def test_named_output_has_a_label_and_one_column_per_class():
    from mlflow.exceptions import MlflowException

    from ddmlflow.serving import named_output

    p = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]])
    out = named_output(p, ["circle", "square", "triangle"])
    assert list(out.columns) == ["label", "circle", "square", "triangle"]
    assert list(out["label"]) == ["square", "circle"]
    assert np.allclose(out[["circle", "square", "triangle"]].to_numpy(), p)
    with pytest.raises(MlflowException):
        named_output(p, ["label", "a", "b"])


def test_system_metrics_are_logged_for_training_runs(mlflow_env, monkeypatch):
    import time

    import mlflow

    from ddmlflow.tracking import create_child, setup, step_run

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    rid = create_child(setup(), None, "train_local/00", "train_local", "")
    deadline = time.time() + 300  # a state to wait for, not a span: the first sample, however busy the machine
    with step_run(rid, system_metrics=True):
        while not any(k.startswith("system/") for k in mlflow.MlflowClient().get_run(rid).data.metrics):
            assert time.time() < deadline, "no system metric was logged"
            time.sleep(0.2)
    keys = mlflow.MlflowClient().get_run(rid).data.metrics
    assert any(k.startswith("system/cpu_utilization") for k in keys), sorted(keys)
