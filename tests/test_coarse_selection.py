"""The coarse net's own stopping rule: coarse_patience on held-out training data, not the locals' patience."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from ddmlflow import decomposition
from ddmlflow.config import resolve
from ddmlflow.data import Dataset
from ddmlflow.pipeline.coarse import selection_split, train_coarse
from ddmlflow.pipeline.prepared import log_prepared
from ddmlflow.pipeline.train import load_probs, log_probs
from ddmlflow.tracking import step_run


def _runs(n_train=200, n_val=60, k=10, n_locals=4):
    """A decompose run and four 'local' runs whose probabilities carry the class, partly, and some label noise."""
    rng = np.random.default_rng(0)
    y, yv = rng.integers(0, k, n_train), rng.integers(0, k, n_val)

    def probs(labels):
        out = []
        for _ in range(n_locals):
            seen = np.where(rng.random(len(labels)) < 0.5, labels, rng.integers(0, k, len(labels)))
            z = 3.0 * np.eye(k)[seen] + rng.normal(0, 1, (len(labels), k))
            out.append(np.exp(z) / np.exp(z).sum(1, keepdims=True))
        return out

    p_tr, p_va = probs(y), probs(yv)
    y_noisy = np.where(rng.random(n_train) < 0.3, rng.integers(0, k, n_train), y)  # something to overfit
    ds = Dataset(
        "tiny", rng.random((n_train, 8, 8, 3)), y_noisy, rng.random((n_val, 8, 8, 3)), yv, [str(c) for c in range(k)]
    )
    with mlflow.start_run() as dec:
        log_prepared(ds, decomposition.make("2x2", (8, 8, 3)))
    local_ids = []
    for a, b in zip(p_tr, p_va):
        with mlflow.start_run() as run:
            mlflow.log_param("decompose_run", dec.info.run_id)
            log_probs(a, b)
        local_ids.append(run.info.run_id)
    return local_ids, y_noisy, yv


def _coarse(cfg, local_ids):
    run_id = mlflow.MlflowClient().create_run("0").info.run_id
    with step_run(run_id):
        train_coarse(cfg, local_ids)
    c = mlflow.MlflowClient()
    return c.get_run(run_id), [m.value for m in c.get_metric_history(run_id, "val_accuracy")]


@pytest.mark.slow
def test_coarse_net_stops_by_its_own_rule_on_held_out_training_data(mlflow_env):
    local_ids, y, yv = _runs()
    cfg = resolve("cifar10-vgg3-2x2", coarse_epochs="40", coarse_patience="2", coarse_batch_size="16")
    assert cfg.patience == 0 and cfg.coarse_patience == 2  # the locals train fixed epochs, the coarse net not

    run, hist = _coarse(cfg, local_ids)
    m, p = run.data.metrics, run.data.params
    assert m["epochs_run"] < 40 and len(hist) == m["epochs_run"]
    best = int(np.argmax(hist))
    assert m["epochs_run"] == best + cfg.coarse_patience + 1  # stopped `coarse_patience` epochs after its best
    assert "held-out" in p["coarse_selection"] and p["coarse_patience"] == "2"
    # the epoch was chosen on held-out training samples, and the best epoch's weights were restored
    p_train, p_val = load_probs(run.info.run_id)
    _, sel = selection_split(len(y), cfg.seed)
    assert np.mean(p_train[sel].argmax(1) == y[sel]) == pytest.approx(max(hist), abs=1e-6)
    assert m["final_val_accuracy"] == pytest.approx(np.mean(p_val.argmax(1) == yv))  # reported set: untouched

    fixed, hist0 = _coarse(resolve("cifar10-vgg3-2x2", coarse_epochs="6", coarse_patience="0"), local_ids)
    assert fixed.data.metrics["epochs_run"] == 6 and len(hist0) == 6 and "none" in fixed.data.params["coarse_selection"]


def test_selection_split_is_seeded_disjoint_and_covers_the_training_set():
    a, b = selection_split(100, 0)
    assert len(b) == 20 and not set(a) & set(b) and sorted([*a, *b]) == list(range(100))
    assert np.array_equal(b, selection_split(100, 0)[1]) and not np.array_equal(b, selection_split(100, 1)[1])
    assert len(selection_split(2, 0)[0]) == 1
