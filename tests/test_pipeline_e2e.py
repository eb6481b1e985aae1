"""End to end: `mlflow run . -e full` on tiny settings, checked through MlflowClient.

One real run (module fixture) is shared by the checks: runs and metrics, GPU
pinning (k mod 2; TensorFlow falls back to the CPU here), registry aliases, the
pyfunc against the two-step computation, `mlflow models serve`, and reuse.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow
TINY = {"n_train": "96", "n_val": "48", "epochs": "2", "coarse_epochs": "3", "gpus": "0,1", "max_parallel": "2",
        "registered_model_name": "e2e-shapes"}


def mlflow_run(env, cwd, params: dict, entry="full") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", entry, "--env-manager", "local"]
    for k, v in params.items():
        cmd += ["-P", f"{k}={v}"]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}", DDMLFLOW_WORK=str(tmp / "work"),
               DDMLFLOW_CACHE=str(tmp / "cache"), TF_CPP_MIN_LOG_LEVEL="2")
    first = mlflow_run(env, tmp, TINY)
    assert first.returncode == 0, first.stderr[-3000:]
    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    yield {"tmp": tmp, "env": env, "first": first, "client": mlflow.MlflowClient()}


EXP = "ddmlflow-shapes2d"  # the experiment `full` logs into; `mlflow run`'s own run stays in Default as a launcher


def exp_id(client) -> str:
    return client.get_experiment_by_name(EXP).experiment_id


def runs_by_name(client, parent_id: str) -> dict:
    runs = client.search_runs([exp_id(client)], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    return {r.info.run_name: r for r in runs}


def parent_of(client):
    parents = [r for r in client.search_runs([exp_id(client)], order_by=["attributes.start_time ASC"])
               if "mlflow.parentRunId" not in r.data.tags]
    return parents


def test_one_parent_and_every_child_finished(e2e):
    c = e2e["client"]
    parents = parent_of(c)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = runs_by_name(c, parents[0].info.run_id)
    expected = {"decompose", "train_global", "train_coarse", "evaluate"} | {f"train_local/{k:02d}" for k in range(4)}
    assert set(children) == expected
    assert all(r.info.status == "FINISHED" for r in children.values())
    assert "runs table" in e2e["first"].stderr and "workflowType=machine_learning" in e2e["first"].stderr


def test_training_runs_log_epochs_profile_and_model(e2e):
    c = e2e["client"]
    children = runs_by_name(c, parent_of(c)[0].info.run_id)
    for name in ["train_global"] + [f"train_local/{k:02d}" for k in range(4)]:
        r = children[name]
        for key in ("params_count", "flops", "train_time_s", "eval_time_ms", "epochs_run"):
            assert key in r.data.metrics, (name, key)
        hist = c.get_metric_history(r.info.run_id, "val_accuracy")
        assert sorted(m.step for m in hist) == [0, 1]
        assert r.data.params["epochs"] == "2" and r.data.tags["model_uri"].startswith("models:/")
    assert children["train_local/00"].data.params["input_shape"] == "16x16x3"
    assert children["train_global"].data.params["input_shape"] == "32x32x3"


def test_locals_pinned_k_mod_g(e2e):
    c = e2e["client"]
    children = runs_by_name(c, parent_of(c)[0].info.run_id)
    for k in range(4):
        tags = children[f"train_local/{k:02d}"].data.tags
        assert tags["CUDA_VISIBLE_DEVICES"] == str(k % 2)
        assert tags["device"] == "CPU"  # no GPU here: TensorFlow falls back


def test_evaluate_metrics_and_artifacts(e2e):
    c = e2e["client"]
    ev = runs_by_name(c, parent_of(c)[0].info.run_id)["evaluate"]
    for split in ("val_accuracy", "train_accuracy"):
        for k in ("global", "local_mean", "local_min", "local_max", "cnn_dnn", "avg_prob", "majority_vote"):
            v = ev.data.metrics[f"{split}/{k}"]
            assert 0.0 <= v <= 1.0
    m = ev.data.metrics
    assert m["val_accuracy/local_min"] <= m["val_accuracy/local_mean"] <= m["val_accuracy/local_max"]
    assert m["speedup"] > 0
    arts = {a.path for a in c.list_artifacts(ev.info.run_id)}
    assert {"results.json", "results.md", "training_times.png", "local_predictions.png"} <= arts
    results = json.loads(c.download_artifacts(ev.info.run_id, "results.json", str(e2e["tmp"])) and
                         (e2e["tmp"] / "results.json").read_text())
    assert results["results"]["val_accuracy/cnn_dnn"] == pytest.approx(m["val_accuracy/cnn_dnn"])


def test_registered_pyfunc_equals_coarse_on_local_outputs(e2e):
    import mlflow

    from ddmlflow.decomposition import Decomposition
    from ddmlflow.models import to_probabilities
    from ddmlflow.models.cnn_dnn import coarse_features

    c = e2e["client"]
    mv = c.get_model_version_by_alias("e2e-shapes", "champion")
    assert c.get_latest_versions("e2e-shapes")[0].version == mv.version
    model = mlflow.pyfunc.load_model("models:/e2e-shapes@champion")
    children = runs_by_name(c, parent_of(c)[0].info.run_id)
    dec_run = children["decompose"].info.run_id
    decomposition = Decomposition.from_json(mlflow.artifacts.load_text(f"runs:/{dec_run}/decomposition.json"))
    x = np.random.default_rng(0).random((5, *decomposition.image_shape), dtype=np.float32)
    out = model.predict(x)
    assert list(out.columns) == ["label", *children["decompose"].data.tags["class_names"].split(",")]
    probs = out.drop(columns="label").to_numpy()
    assert probs.shape == (5, 6) and np.allclose(probs.sum(1), 1, atol=1e-5)
    local = [mlflow.keras.load_model(children[f"train_local/{k:02d}"].data.tags["model_uri"]) for k in range(4)]
    coarse = mlflow.keras.load_model(children["train_coarse"].data.tags["model_uri"])
    feats = coarse_features([to_probabilities(m.predict(decomposition.crop(x, i), verbose=0))
                             for i, m in enumerate(local)])
    assert np.allclose(probs, to_probabilities(coarse.predict(feats, verbose=0)), atol=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload) -> tuple[int, str]:
    req = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_models_serve_answers_post_and_rejects_bad_input(e2e):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/e2e-shapes@champion",
                             "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port)],
                            env=e2e["env"], cwd=e2e["tmp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                time.sleep(1)
        x = np.random.default_rng(1).random((2, 32, 32, 3)).round(3).tolist()
        status, body = _post(f"http://127.0.0.1:{port}/invocations", {"inputs": x})
        assert status == 200, body
        preds = json.loads(body)["predictions"]  # one record per image: label and a probability per class name
        probs = np.asarray([[v for k, v in p.items() if k != "label"] for p in preds])
        assert len(preds) == 2 and probs.shape == (2, 6) and np.allclose(probs.sum(1), 1, atol=1e-4)
        assert all(p["label"] == max((k for k in p if k != "label"), key=p.get) for p in preds)
        status, body = _post(f"http://127.0.0.1:{port}/invocations", {"inputs": [[[0.0, 1.0]]]})
        assert status == 400 and "shape" in body
    finally:
        proc.terminate()
        proc.wait(30)


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
