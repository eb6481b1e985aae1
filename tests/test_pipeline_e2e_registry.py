"""End to end, the same tiny `full` run as ``test_pipeline_e2e`` (the session fixture ``e2e``): its
model served by `mlflow models serve`, a second `full` that reuses every step, and the registry's
champion rule on the real CNN-DNN."""

from __future__ import annotations

import json

import numpy as np
import pytest
from e2e_run import TINY, exp_id, mlflow_run, parent_of, runs_by_name

from conftest import post, served

pytestmark = pytest.mark.slow


def test_models_serve_answers_post_and_rejects_bad_input(e2e):
    with served("models:/e2e-shapes@champion", e2e["env"], e2e["tmp"]) as url:
        x = np.random.default_rng(1).random((2, 32, 32, 3)).round(3).tolist()
        status, body = post(f"{url}/invocations", {"inputs": x})
        assert status == 200, body
        preds = json.loads(body)["predictions"]  # one record per image: label and a probability per class name
        probs = np.asarray([[v for k, v in p.items() if k != "label"] for p in preds])
        assert len(preds) == 2 and probs.shape == (2, 6) and np.allclose(probs.sum(1), 1, atol=1e-4)
        assert all(p["label"] == max((k for k in p if k != "label"), key=p.get) for p in preds)
        status, body = post(f"{url}/invocations", {"inputs": [[[0.0, 1.0]]]})
        assert status == 400 and "Shape of input (1, 1, 2) does not match expected shape (-1, 32, 32, 3)" in body
        nan = np.asarray(x)
        nan[1, 0, 0, 0] = np.nan
        status, body = post(f"{url}/invocations", {"inputs": nan.tolist()})
        assert status == 400 and "input: contains NaN or infinite values" in body


def test_second_full_reuses_finished_steps(e2e):
    c = e2e["client"]
    before = {r.info.run_id for r in c.search_runs([exp_id(c)])}
    second = mlflow_run(e2e["env"], e2e["tmp"], TINY)
    assert second.returncode == 0, second.stderr[-3000:]
    new = [r for r in c.search_runs([exp_id(c)]) if r.info.run_id not in before]
    assert [r.info.run_name for r in new if "mlflow.parentRunId" not in r.data.tags] != []
    assert not [r for r in new if r.info.run_name.startswith("train_")], "a training ran again"
    parent = [r for r in new if "mlflow.parentRunId" not in r.data.tags][0]
    assert parent.data.metrics["reused_steps"] >= 8
    assert "reusing finished run" in second.stderr
    # the first parent used what its steps returned, this one read them from the reused runs: the same
    first = parent_of(c)[0]
    summary = ("train_accuracy/", "val_accuracy/", "speedup")
    accs = [{k: v for k, v in r.data.metrics.items() if k.startswith(summary)} for r in (first, parent)]
    assert accs[0] and accs[0] == accs[1]
    notes = [r.data.tags["mlflow.note.content"].split("\n\nReused finished runs")[0].strip() for r in (first, parent)]
    assert "Which classes" in notes[0] and notes[0] == notes[1]


def test_second_version_is_latest_and_takes_champion_only_when_not_worse(e2e, tmp_path):
    """The registry rule on the real CNN-DNN: a worse version stays off `champion`, an equal one takes it."""
    import mlflow

    from ddmlflow.decomposition import Decomposition
    from ddmlflow.serving import log_cnn_dnn, register

    c = e2e["client"]
    children = runs_by_name(c, parent_of(c)[0].info.run_id)
    first = c.get_model_version_by_alias("e2e-shapes", "champion")
    assert int(first.version) == 1 and first.run_id == children["evaluate"].info.run_id
    best = float(first.tags["val_accuracy"])
    assert best == children["evaluate"].data.metrics["val_accuracy/cnn_dnn"]
    dec = Decomposition.from_json(
        mlflow.artifacts.load_text(f"runs:/{children['decompose'].info.run_id}/decomposition.json")
    )
    paths = []
    for name in [f"train_local/{k:02d}" for k in range(4)] + ["train_coarse"]:
        paths.append(tmp_path / f"{name.replace('/', '_')}.keras")
        mlflow.keras.load_model(children[name].data.tags["model_uri"]).save(paths[-1])
    x = np.random.default_rng(2).random((3, 32, 32, 3), dtype=np.float32)
    with mlflow.start_run(run_name="second-cnn-dnn") as run:
        names = children["decompose"].data.tags["class_names"].split(",")
        uri = log_cnn_dnn(paths[:4], paths[4], dec, names, x[:2], tmp_path)
    worse = register(uri, "e2e-shapes", best - 0.01)
    assert (worse["version"], worse["champion"], worse["previous_champion"]) == (2, False, 1)
    assert int(c.get_model_version_by_alias("e2e-shapes", "champion").version) == 1
    latest = mlflow.pyfunc.load_model("models:/e2e-shapes/latest")
    assert latest.metadata.run_id == run.info.run_id  # version 2, not the champion's evaluate run
    champion = mlflow.pyfunc.load_model("models:/e2e-shapes@champion")
    assert champion.metadata.run_id == children["evaluate"].info.run_id
    new, old = latest.predict(x), champion.predict(x)  # the same trained nets
    assert list(new["label"]) == list(old["label"])
    np.testing.assert_allclose(new.drop(columns="label").to_numpy(), old.drop(columns="label").to_numpy(), atol=1e-5)
    equal = register(uri, "e2e-shapes", best)
    assert (equal["version"], equal["champion"], equal["previous_champion"]) == (3, True, 1)
    assert int(c.get_model_version_by_alias("e2e-shapes", "champion").version) == 3
