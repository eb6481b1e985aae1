"""End to end: `mlflow run . -e full` on tiny settings, checked through MlflowClient.

One real run (the session fixture ``e2e``, see ``e2e_run``) is shared by the checks: runs and
metrics, GPU pinning (k mod 2; TensorFlow falls back to the CPU here) and the pyfunc against the
two-step computation; serving, the registry and reuse are in ``test_pipeline_e2e_registry``.
What `evaluate` reports is recomputed here from what the training runs logged (probs.npz,
train_time_s), not read back from the dict it was written from.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from e2e_run import parent_of, runs_by_name

from conftest import ROOT

pytestmark = pytest.mark.slow


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
def recomputed(_e2e_full_run):
    """Every accuracy of the evaluate table and the speedup, from the runs' own artifacts and metrics."""
    import mlflow

    from ddmlflow import aggregate
    from ddmlflow.data import load

    c = mlflow.MlflowClient(_e2e_full_run["env"]["MLFLOW_TRACKING_URI"])
    dst = _e2e_full_run["tmp"] / "recompute"
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


def test_coarse_heldout_benchmark_refits_the_runs_coarse_net(e2e):
    """`benchmarks/coarse_heldout.py` on the run: the locals' figures are the run's, and it fits a coarse net
    per seed and per fold."""
    c = e2e["client"]
    parent = parent_of(c)[0]
    children = runs_by_name(c, parent.info.run_id)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "coarse_heldout.py"), "--parent", parent.info.run_id]
    res = subprocess.run(
        [*cmd, "--seeds", "1", "--folds", "2", "--json"], env=e2e["env"], capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    ev = children["evaluate"].data.metrics
    assert out["avg_prob_val_accuracy"] == pytest.approx(ev["val_accuracy/avg_prob"])
    assert out["run_cnn_dnn_val_accuracy"] == children["train_coarse"].data.metrics["final_val_accuracy"]
    assert np.mean(out["locals_val_accuracy"]) == pytest.approx(ev["val_accuracy/local_mean"])
    assert len(out["train_per_seed"]) == 1 and len(out["heldout_per_fold"]) == len(out["avg_prob_per_fold"]) == 2
    assert all(0 <= v <= 1 for v in out["train_per_seed"] + out["heldout_per_fold"])
