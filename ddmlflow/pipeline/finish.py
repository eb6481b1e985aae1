"""What every training run logs when its fit is done, in one place.

Global, local, coarse and every strategy end the same way: class
probabilities on train and val data (so later steps need no model in
memory), the standard metrics, the profile (params, FLOPs, time to evaluate)
and the Keras model. One function, so the runs table compares like with like.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import numpy as np

from .. import profiling
from ..serving import log_keras_model
from ..tracking import retry
from ..training import accuracy, predict_probs


def finish_training(net, data: tuple, summary: dict, batch_size: int = 32, extra: dict | None = None,
                    profile: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """In the active run: metrics, ``probs.npz`` and the model of a trained ``net``; returns its probabilities.

    ``data`` is (x, y, x_val, y_val) as the net sees it; ``summary`` is ``training.fit``'s
    (``train_time_s``, ``epochs_run``); ``extra`` metrics are logged with the others.
    """
    x, y, xv, yv = data
    p_train, p_val = predict_probs(net, x), predict_probs(net, xv)
    metrics = {"train_time_s": summary["train_time_s"], "epochs_run": summary["epochs_run"],
               "params_count": net.count_params(), "final_train_accuracy": accuracy(p_train, y),
               "final_val_accuracy": accuracy(p_val, yv), **(extra or {})}
    if profile:
        prof = profiling.profile(net, batch_size=min(batch_size, len(xv)), repeats=3)
        metrics.update({"params_count": prof["params"], "trainable_params": prof["trainable_params"],
                        "flops": prof["flops"], "paper_mflops": prof["paper_mflops"],
                        "flops_exact": prof["flops_exact"], "eval_time_ms": prof["tteval_ms"]})
    retry(mlflow.log_metrics, metrics)
    log_probs(p_train, p_val)
    log_keras_model(net, np.asarray(x[:2], dtype="float32"))
    return p_train, p_val


def log_probs(p_train: np.ndarray, p_val: np.ndarray) -> None:
    """Class probabilities on train and val data, so later steps need no model in memory."""
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp, "probs.npz"), train=p_train, val=p_val)
        retry(mlflow.log_artifact, str(Path(tmp, "probs.npz")))
