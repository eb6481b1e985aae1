"""End to end: `mlflow run . -e full` on tiny settings, checked through MlflowClient.

One real run (module fixture) is shared by the checks: runs and metrics, GPU
pinning (k mod 2; TensorFlow falls back to the CPU here), registry aliases, the
pyfunc against the two-step computation, `mlflow models serve`, and reuse.
What `evaluate` reports is recomputed here from what the training runs logged
(probs.npz, train_time_s), not read back from the dict it was written from.
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
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow
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


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}",
        DDMLFLOW_WORK=str(tmp / "work"),
        DDMLFLOW_CACHE=str(tmp / "cache"),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
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
    parents = [
        r
        for r in client.search_runs([exp_id(client)], order_by=["attributes.start_time ASC"])
        if "mlflow.parentRunId" not in r.data.tags
    ]
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
        assert tags["ddmlflow.device"] in (
            "CPU",
            f"GPU:{k % 2}",
        )  # CPU when TensorFlow sees no GPU, else the pinned one


def _artifact(client, run_id: str, path: str, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, path, str(dst)))


def _probs(client, run_id: str, dst) -> tuple[np.ndarray, np.ndarray]:
    with np.load(_artifact(client, run_id, "probs.npz", dst / run_id)) as z:
        return z["train"], z["val"]


@pytest.fixture(scope="module")
def recomputed(e2e):
    """Every accuracy of the evaluate table and the speedup, from the runs' own artifacts and metrics."""
    from ddmlflow import aggregate
    from ddmlflow.data import load

    c, dst = e2e["client"], e2e["tmp"] / "recompute"
    children = runs_by_name(c, parent_of(c)[0].info.run_id)
    dec = children["decompose"].info.run_id
    labels = {s: np.load(_artifact(c, dec, f"data/y_{s}.npy", dst / "data")) for s in ("train", "val")}
    ds = load("shapes2d", n_train=96, n_val=48)  # decompose logged the data set it was asked for
    assert np.array_equal(labels["train"], ds.y_train) and np.array_equal(labels["val"], ds.y_val)
    local_ids = [children[f"train_local/{k:02d}"].info.run_id for k in range(4)]
    local = [_probs(c, r, dst) for r in local_ids]
    coarse = _probs(c, children["train_coarse"].info.run_id, dst)
    glob = _probs(c, children["train_global"].info.run_id, dst)
    out = {}
    for j, (split, y) in enumerate((("train_accuracy", labels["train"]), ("val_accuracy", labels["val"]))):
        assert all(p[j].shape == (len(y), 6) for p in local + [coarse, glob])
        acc = [float(np.mean(p[j].argmax(1) == y)) for p in local]
        out.update(
            {
                f"{split}/local_mean": np.mean(acc),
                f"{split}/local_min": min(acc),
                f"{split}/local_max": max(acc),
                f"{split}/global": float(np.mean(glob[j].argmax(1) == y)),
                f"{split}/cnn_dnn": float(np.mean(coarse[j].argmax(1) == y)),
                f"{split}/avg_prob": float(
                    np.mean(aggregate.average_probability([p[j] for p in local]).argmax(1) == y)
                ),
                f"{split}/majority_vote": float(np.mean(aggregate.majority_vote([p[j] for p in local]) == y)),
            }
        )
        if split == "val_accuracy":  # each training run's own final accuracy is the same number
            for r, a in zip(local_ids, acc):
                assert c.get_run(r).data.metrics["final_val_accuracy"] == pytest.approx(a)
    t = {name: children[name].data.metrics["train_time_s"] for name in children if name.startswith("train_")}
    times = {
        "global CNN": t["train_global"],
        "slowest local": max(t[f"train_local/{k:02d}"] for k in range(4)),
        "coarse": t["train_coarse"],
    }
    times["CNN-DNN"] = times["slowest local"] + times["coarse"]
    out["speedup"] = times["global CNN"] / times["CNN-DNN"]
    return {
        "results": out,
        "times": times,
        "evaluate": children["evaluate"],
        "dst": dst,
        "y_val": labels["val"],
        "val_probs": {"cnn_dnn": coarse[1], "global": glob[1]},
        "global": children["train_global"],
    }


def test_evaluate_metrics_equal_those_recomputed_from_the_logged_probs(e2e, recomputed):
    ev, want = recomputed["evaluate"], recomputed["results"]
    m = ev.data.metrics
    assert set(want) <= set(m)
    for key, value in want.items():
        assert m[key] == pytest.approx(value, abs=1e-9), key
    # the numbers differ from each other, so a mixed-up split, net or aggregation would show
    assert len({round(v, 9) for k, v in want.items() if "/" in k}) >= 4
    parent = parent_of(e2e["client"])[0].data.metrics  # full copies them into the parent run
    assert all(parent[k] == pytest.approx(m[k]) for k in want)
    # MLflow's classifier evaluation: per method, per-class metrics equal to those of the logged probabilities,
    # a confusion matrix of its own, linked to the method's logged model and to the validation set
    import mlflow

    from ddmlflow.pipeline.classifier_eval import class_key

    c, y = e2e["client"], recomputed["y_val"]
    classes = [
        class_key(n)
        for n in runs_by_name(  # "circle+square" -> "circle_square": "+" is not allowed in a metric key
            c, parent_of(c)[0].info.run_id
        )["decompose"]
        .data.tags["class_names"]
        .split(",")
    ]
    arts = {a.path for a in c.list_artifacts(ev.info.run_id)}
    model_ids = {
        "cnn_dnn": ev.data.tags["model_uri"].split("/", 1)[1],
        "global": recomputed["global"].data.tags["model_uri"].split("/", 1)[1],
    }
    for method, probs in recomputed["val_probs"].items():
        pred = probs.argmax(1)
        for k, name in enumerate(classes):
            hit, said = y == k, pred == k
            assert m[f"val_{method}_recall/{name}"] == pytest.approx(np.mean(said[hit]) if hit.any() else 0.0)
            assert m[f"val_{method}_precision/{name}"] == pytest.approx(np.mean(hit[said]) if said.any() else 0.0)
            assert f"val_{method}_f1/{name}" in m
        assert m[f"val_{method}_accuracy_score"] == pytest.approx(want[f"val_accuracy/{method}"])
        assert {
            f"val_{method}_confusion_matrix.png",
            f"val_{method}_per_class_metrics.csv",
            f"val_{method}_roc_curve_plot.png",
        } <= arts
        linked = [x for x in mlflow.get_logged_model(model_ids[method]).metrics if x.run_id == ev.info.run_id]
        assert {f"val_{method}_recall/{classes[0]}", f"val_{method}_accuracy_score"} <= {x.key for x in linked}
        assert {x.dataset_name for x in linked if x.key.startswith(f"val_{method}_")} == {"shapes2d-val"}
        others = {f"val_{o}_" for o in ("cnn_dnn", "global", "avg_prob", "majority_vote") if o != method}
        assert not [x.key for x in linked if x.key.startswith(tuple(others))]  # no other method's numbers
    for method in ("avg_prob", "majority_vote"):
        assert f"val_{method}_recall/{classes[0]}" in m and f"val_{method}_confusion_matrix.png" in arts
    assert {"confusion_matrices.png", "per_class.md"} <= arts and "per_class_metrics.csv" not in arts
    contexts = {(i.dataset.name, t.value) for i in c.get_run(ev.info.run_id).inputs.dataset_inputs for t in i.tags}
    assert ("shapes2d-val", "validation") in contexts
    assert not any("_recall/" in k for k in parent)  # the parent keeps the results table only


def test_results_json_and_table_show_the_recomputed_numbers(e2e, recomputed):
    c, ev, want = e2e["client"], recomputed["evaluate"], recomputed["results"]
    dst = recomputed["dst"] / "evaluate"
    arts = {a.path for a in c.list_artifacts(ev.info.run_id)}
    assert {"results.json", "results.md", "training_times.png", "local_predictions.png"} <= arts
    results = json.loads(_artifact(c, ev.info.run_id, "results.json", dst).read_text())
    assert results["train_times_s"] == pytest.approx(recomputed["times"])
    assert list(results["train_times_s"]) == ["global CNN", "slowest local", "coarse", "CNN-DNN"]
    lines = [
        line
        for line in _artifact(c, ev.info.run_id, "results.md", dst).read_text().splitlines()
        if line.startswith("|")
    ]
    head, row = ([cell.strip() for cell in line.strip("|").split("|")] for line in (lines[0], lines[2]))
    assert head == [
        "Decomp.",
        "global CNN",
        "local avg",
        "local min",
        "local max",
        "avg. prob.",
        "maj. vote",
        "CNN-DNN",
    ]
    assert row[0] == "2x2, overlap 0"
    keys = ["global", "local_mean", "local_min", "local_max", "avg_prob", "majority_vote", "cnn_dnn"]
    for key, cell in zip(keys, row[1:]):
        val, train = cell.replace("(", " ").replace(")", " ").split()
        assert float(val) == pytest.approx(want[f"val_accuracy/{key}"], abs=5e-5), (key, cell)
        assert float(train) == pytest.approx(want[f"train_accuracy/{key}"], abs=5e-5), (key, cell)


def test_figures_are_real_images(e2e, recomputed):
    from PIL import Image

    c, ev = e2e["client"], recomputed["evaluate"]
    dst = recomputed["dst"] / "evaluate"
    sizes = {}
    for name in ("training_times.png", "local_predictions.png"):
        with Image.open(_artifact(c, ev.info.run_id, name, dst)) as im:
            assert im.format == "PNG"
            im.load()
            rgb = np.asarray(im.convert("RGB"))
        sizes[name] = rgb.shape[:2]
        assert 250 <= rgb.shape[0] <= 3000 and 250 <= rgb.shape[1] <= 3000, (name, rgb.shape)
        assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50, name  # drawn on, not a blank canvas
    bars = np.asarray(Image.open(dst / "training_times.png").convert("RGB")).reshape(-1, 3)
    from matplotlib.colors import to_rgb

    from ddmlflow import figures

    for hex_colour in (figures.GLOBAL, figures.LOCAL, figures.COARSE):  # a bar each: global, slowest local, coarse
        colour = tuple(round(255 * v) for v in to_rgb(hex_colour))
        assert (np.abs(bars.astype(int) - colour).max(1) <= 2).sum() > 20, colour
    h, w = sizes["local_predictions.png"]
    assert h > w  # four images (rows) of four boxes each, with titles: taller than wide


def test_registered_pyfunc_equals_coarse_on_local_outputs(e2e):
    import mlflow

    from ddmlflow.decomposition import Decomposition
    from ddmlflow.models import to_probabilities
    from ddmlflow.models.cnn_dnn import coarse_features

    c = e2e["client"]
    assert int(c.get_model_version_by_alias("e2e-shapes", "champion").version) == 1
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
    feats = coarse_features(
        [to_probabilities(m.predict(decomposition.crop(x, i), verbose=0)) for i, m in enumerate(local)]
    )
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
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            "models:/e2e-shapes@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=e2e["env"],
        cwd=e2e["tmp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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
        assert status == 400 and "Shape of input (1, 1, 2) does not match expected shape (-1, 32, 32, 3)" in body
        nan = np.asarray(x)
        nan[1, 0, 0, 0] = np.nan
        status, body = _post(f"http://127.0.0.1:{port}/invocations", {"inputs": nan.tolist()})
        assert status == 400 and "input: contains NaN or infinite values" in body
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
