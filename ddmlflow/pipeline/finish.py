"""What every training run logs when its fit is done, in one place.

Global, local, coarse and every strategy end the same way: class
probabilities on train and val data (so later steps need no model in
memory), the standard metrics, the profile (params, FLOPs, time to evaluate),
the data it saw as MLflow datasets, its description, and the Keras model as
an MLflow 3 logged model carrying the run's params and final metrics. One
function, so the runs table compares like with like.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.numpy_dataset import from_numpy  # what mlflow.data names at run time (mypy cannot see it)

from .. import profiling
from ..data import GENERATED
from ..describe import Role, bounds, training_note
from ..devices import configure_tensorflow
from ..inference import accuracy, predict_probs
from ..serving import log_keras_model, model_id
from ..tags import DEVICE_TAG, NAMESPACE, NOTE_TAG
from ..tracking import retry


def finish_training(
    net, data: tuple, summary: dict, role: Role, batch_size: int = 32, extra: dict | None = None, profile: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """In the active run: metrics, ``probs.npz`` and the model of a trained ``net``; returns its probabilities.

    ``data`` is (x, y, x_val, y_val) as the net sees it; ``summary`` is ``training.fit``'s
    (``train_time_s``, ``epochs_run``); ``role`` says what the net is; ``extra`` metrics are logged
    with the others.
    """
    x, y, xv, yv = data
    p_train, p_val = predict_probs(net, x), predict_probs(net, xv)
    metrics = {
        "train_time_s": summary["train_time_s"],
        "epochs_run": summary["epochs_run"],
        "params_count": net.count_params(),
        "final_train_accuracy": accuracy(p_train, y),
        "final_val_accuracy": accuracy(p_val, yv),
        **(extra or {}),
    }
    if profile:
        prof = profiling.profile(net, batch_size=min(batch_size, len(xv)), repeats=3)
        metrics.update(
            {
                "params_count": prof["params"],
                "trainable_params": prof["trainable_params"],
                "flops": prof["flops"],
                "paper_mflops": prof["paper_mflops"],
                "flops_exact": prof["flops_exact"],
                "eval_time_ms": prof["tteval_ms"],
            }
        )
    params = retry(mlflow.MlflowClient().get_run, mlflow.active_run().info.run_id).data.params
    device = configure_tensorflow()
    seen = log_datasets(role, params, data)
    tags = {k: v for k, v in mlflow.active_run().data.tags.items() if k.startswith(NAMESPACE) and "key" not in k}
    uri = log_keras_model(
        net, np.asarray(x[:2], dtype="float32"), name=role.model_name, params=params, tags={**tags, DEVICE_TAG: device}
    )
    logged = model_id(uri)  # the run's logged model (its model_uri tag)
    final = {k: metrics.pop(k) for k in ("final_train_accuracy", "final_val_accuracy")}
    retry(mlflow.log_metrics, metrics, model_id=logged)
    for (key, value), ds in zip(final.items(), seen):  # the final accuracies name the data they were measured on
        retry(mlflow.log_metric, key, value, model_id=logged, dataset=ds)
    log_probs(p_train, p_val)
    mlflow.set_tags({DEVICE_TAG: device, NOTE_TAG: training_note(role, params, device, len(y), len(yv))})
    return p_train, p_val


class DataSource(DatasetSource):
    """Where a training run's data came from: a folder, a generator and its seed, or earlier runs."""

    def __init__(self, **where: Any):
        self.where = {k: str(v) for k, v in where.items() if v not in (None, "")}

    @staticmethod
    def _get_source_type() -> str:
        return "ddmlflow"

    def load(self, **kwargs):
        raise NotImplementedError("rerun the decompose step with the logged parameters")

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any):
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return dict(self.where)

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]):
        return cls(**source_dict)


def log_datasets(role: Role, params: dict, data: tuple) -> tuple:
    """Log the training and validation data as the net saw them (crop, features) as MLflow datasets.

    The digest is computed from the arrays themselves, so two runs that saw the same
    pixels show the same digest in the UI; the source says where they came from.
    """
    x, y, xv, yv = data
    name = params.get("dataset", "data")
    if params.get("data_dir"):
        origin = {"folder": params["data_dir"]}
    elif name in GENERATED:
        origin = {"generator": f"ddmlflow.data.generated:{name}", "seed": params.get("seed")}
    else:
        origin = {"download": name}
    if role.kind == "coarse":
        name, origin = f"{name}:coarse-features", {"local_runs": params["local_runs"]}
    elif role.kind == "local":
        name = f"{name}:box{role.box:02d}[{bounds(role.box_bounds)}]"
        origin["box"] = bounds(role.box_bounds)
    origin.update(decompose_run=params.get("decompose_run"), image_size=params.get("image_size"))
    out = []
    for split, (f, t) in (("training", (x, y)), ("validation", (xv, yv))):
        src = DataSource(**origin, split=split, n=len(t))
        ds = from_numpy(np.asarray(f), source=src, targets=np.asarray(t), name=f"{name}-{split[:3]}")
        retry(mlflow.log_input, ds, context=split)
        out.append(ds)
    return tuple(out)


def log_probs(p_train: np.ndarray, p_val: np.ndarray) -> None:
    """Class probabilities on train and val data, so later steps need no model in memory."""
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp, "probs.npz"), train=p_train, val=p_val)
        retry(mlflow.log_artifact, str(Path(tmp, "probs.npz")))
