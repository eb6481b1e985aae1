"""The further strategies end to end on a real sqlite MLflow store: coherent, transfer, compose."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import mlflow
import numpy as np
import pytest

from ddmlflow import config
from ddmlflow.errors import InputError
from ddmlflow.steps import STEPS

STANDARD = ("train_time_s", "epochs_run", "params_count", "final_train_accuracy", "final_val_accuracy")


def _run(fn, *args) -> str:
    with mlflow.start_run() as r:
        fn(*args)
    return r.info.run_id


@pytest.mark.slow
def test_strategies_log_what_evaluate_needs(mlflow_env):
    from conftest import predict_two_step
    from ddmlflow.inference import accuracy, predict_probs
    from ddmlflow.pipeline.coarse import train_coarse
    from ddmlflow.pipeline.decompose import decompose
    from ddmlflow.pipeline.prepared import load_prepared
    from ddmlflow.pipeline.train import load_keras, load_probs, train_network

    cfg = config.resolve("", dataset="shapes2d", n_train="64", n_val="32", epochs="1", coarse_epochs="1")
    dec = _run(decompose, cfg)
    prep = load_prepared(dec)
    n, yv = prep.decomposition.n, np.asarray(prep.y_val)
    local_runs = [_run(train_network, cfg, dec, i) for i in range(n)]
    coarse = _run(train_coarse, cfg, local_runs)
    # the two-step CNN-DNN computed here from the logged Keras nets, not from the probabilities it logged
    two_step = predict_two_step(
        [load_keras(r) for r in local_runs], load_keras(coarse), prep.decomposition, np.asarray(prep.x_val)
    )
    np.testing.assert_allclose(two_step, load_probs(coarse)[1], atol=1e-5)
    two_step_val = accuracy(two_step, yv)

    have = {"decompose_run": dec, "local_runs": local_runs, "coarse_run": coarse}
    strategy_steps = [s for s in STEPS.values() if s.strategy]
    runs = {s.name: _run(lambda s=s: s.call(cfg, **{i.name: have[i.name] for i in s.inputs})) for s in strategy_steps}
    client = mlflow.tracking.MlflowClient()
    m = {s: mlflow.get_run(r).data.metrics for s, r in runs.items()}
    for s, r in runs.items():
        assert all(k in m[s] for k in STANDARD), s
        assert mlflow.get_run(r).data.params["strategy"] == s
        p_train, p_val = load_probs(r)  # evaluate reads these
        assert p_train.shape == (64, prep.num_classes) and p_val.shape == (32, prep.num_classes)
        assert accuracy(p_val, yv) == pytest.approx(m[s]["final_val_accuracy"])
        assert [h.step for h in client.get_metric_history(r, "val_accuracy")] == [0]
        assert m[s]["epochs_run"] == 1

    # CNN-DNN-transfer starts as the two-step CNN-DNN: the same validation accuracy, exactly
    assert m["transfer"]["val_accuracy_init"] == two_step_val
    coherent = load_keras(runs["coherent"])  # BoxCrop loads back; one model on whole images
    assert coherent.input_shape[1:] == prep.decomposition.image_shape
    np.testing.assert_allclose(
        predict_probs(coherent, np.asarray(prep.x_val)), load_probs(runs["coherent"])[1], atol=1e-5
    )
    assert m["coherent"]["params_count"] == m["transfer"]["params_count"]

    c = m["compose"]  # GC: GNet-T, GNet-T-trained, GNet-R
    for k in ("val_accuracy_composed", "val_accuracy_gnet_r"):  # accuracies on the 32 validation images
        assert 0 <= c[k] <= 1 and c[k] * 32 == pytest.approx(round(c[k] * 32)), k
    assert 0 < c["theorem_max_abs_err"] < np.inf  # same padding: Theorem 2.1 holds only approximately
    history = client.get_metric_history(runs["compose"], "subnet_val_accuracy")
    assert sorted(h.step for h in history) == list(range(n))
    # GC's parallel time: the slowest sub-network, then the further training of the composed net
    sub_times = [
        h.value for h in sorted(client.get_metric_history(runs["compose"], "subnet_train_time_s"), key=lambda h: h.step)
    ]
    assert len(sub_times) == n and min(sub_times) > 0
    assert c["subnets_train_time_s"] == pytest.approx(sum(sub_times))
    further = c["train_time_s"] - c["subnets_train_time_s"]
    assert further > 0
    assert c["train_time_parallel_s"] == pytest.approx(max(sub_times) + further)
    params = mlflow.get_run(runs["compose"]).data.params
    assert params["sub_width_divisor"] == str(n) and params["nonoverlapping"] == "True"
    assert c["gnet_r_epochs_run"] == 2 * 1  # GNet-R: the sub-net epochs plus the further epochs, actually run


def test_unknown_strategy_is_an_input_error():
    with pytest.raises(InputError, match="strategies='cnn_dnn,ensemble'"):
        config.parse_options(config.FullOptions, strategies="cnn_dnn,ensemble")


@pytest.mark.slow
def test_transfer_starts_from_locals_pretrained_for_their_own_epochs(mlflow_env):
    """KLW-TL 2.2: the transferred locals are trained ``transfer_pretrain_epochs``, not ``epochs``; they are
    runs of their own (``pretrain_local/NN``), and the two-step CNN-DNN keeps the ``epochs`` locals."""
    from ddmlflow.commands.full import run_full

    small = dict(dataset="shapes2d", n_train="32", n_val="16", epochs="1", coarse_epochs="1")
    cfg = config.resolve("", **small, transfer_pretrain_epochs="2", transfer_coarse="false")
    opts = config.parse_options(
        config.FullOptions, strategies="cnn_dnn,transfer", run_global="false", registered_model_name="-"
    )
    run_full(cfg, opts)
    runs = {r.info.run_name: r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")}
    pre = [runs[f"pretrain_local/{k:02d}"] for k in range(4)]
    locals_ = [runs[f"train_local/{k:02d}"] for k in range(4)]
    assert [r.data.metrics["epochs_run"] for r in pre] == [2] * 4
    assert [r.data.metrics["epochs_run"] for r in locals_] == [1] * 4
    transfer = runs["transfer"].data.params
    assert transfer["local_runs"].split(",") == [r.info.run_id for r in pre] and transfer["pretrain_epochs"] == "2"
    coarse = runs["train_coarse"].data.params
    assert coarse["local_runs"].split(",") == [r.info.run_id for r in locals_]
    # a coarse net trained on the `epochs` locals cannot go with the longer-trained ones
    with pytest.raises(InputError, match="transfer_coarse"):
        run_full(config.resolve("", **small, transfer_pretrain_epochs="2", transfer_coarse="true"), opts)
