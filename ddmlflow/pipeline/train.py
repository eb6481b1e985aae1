"""Steps 2 (KLW sec. 3.1, 5): the global baseline CNN and the N local CNNs.

One function trains either: ``box=None`` is the global net on whole images,
``box=i`` the local net of box i, its widths divided by ``width_divisor``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import numpy as np

from .. import models
from ..config import RunConfig
from ..describe import Role
from ..devices import configure_tensorflow, process_tags
from ..models import register_layers
from ..serving import model_id
from ..tags import BOX_TAG, MODEL_URI_TAG
from ..tracking import get_run, log_params, logged_steps, work_dir
from ..training import FitConfig, fit, seed_everything
from .finish import finish_training, log_probs  # noqa: F401 - log_probs: part of this step's API
from .prepared import load_prepared


def fit_config(cfg: RunConfig, seed: int, augment: str | None) -> FitConfig:
    return FitConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                     optimizer=cfg.optimizer, patience=cfg.patience, seed=seed, augment=augment)


def train_global(cfg: RunConfig, decompose_run: str) -> None:
    """KLW's baseline: the global CNN on whole images."""
    train_network(cfg, decompose_run, None)


def train_local(cfg: RunConfig, decompose_run: str, box: int) -> None:
    """The local CNN of box ``box``, its widths divided by ``width_divisor``."""
    train_network(cfg, decompose_run, box)


def train_network(cfg: RunConfig, decompose_run: str, box: int | None) -> None:
    """In the active run: fit, then log metrics, profile, probabilities and the model."""
    run_id = mlflow.active_run().info.run_id
    mlflow.set_tags({**process_tags(configure_tensorflow()), BOX_TAG: "global" if box is None else str(box)})
    seed = cfg.seed + (0 if box is None else 1 + box)
    seed_everything(seed)
    prep = load_prepared(decompose_run)
    data = prep.box(box)
    x = data[0]
    divisor = 1 if box is None else cfg.width_divisor
    name = "global" if box is None else f"local_{box:02d}"
    net = models.build(cfg.model, x.shape[1:], prep.num_classes, width_divisor=divisor, name=name,
                       dropout=cfg.dropout)
    log_params({**cfg.params(), "decompose_run": decompose_run, "box": "global" if box is None else box,
                "input_shape": "x".join(map(str, x.shape[1:])), "effective_width_divisor": divisor,
                "box_bounds": "global" if box is None else str(prep.decomposition.boxes[box])})
    fc = fit_config(cfg, cfg.seed, prep.augment)  # one augmentation seed for all nets: same rotated volumes
    train_x = prep.augmented_train(box, fc) if prep.augment else data[0]
    summary = fit(net, (train_x, *data[1:]), prep.num_classes, fc,
                  checkpoint_dir=work_dir("checkpoints", run_id), skip_epochs=logged_steps(run_id, "loss"))
    role = Role("global") if box is None else Role("local", box, str(prep.decomposition.boxes[box]))
    finish_training(net, data, summary, role, batch_size=cfg.batch_size)


def load_probs(run_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) class probabilities a training run logged."""
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="probs.npz",
                                               dst_path=tempfile.mkdtemp(dir=work_dir("tmp")))
    with np.load(path) as z:
        return z["train"], z["val"]


def logged_keras_archive(run_id: str, dst: Path) -> Path:
    """The ``.keras`` archive of the model a training run logged, copied into folder ``dst``: the file
    itself, not loaded and saved again (the logged model's layout: ``data/model.keras``)."""
    location = mlflow.get_logged_model(model_id(get_run(run_id).data.tags[MODEL_URI_TAG])).artifact_location
    dst.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/data/model.keras", dst_path=str(dst)))


def load_keras(run_id: str):
    """The Keras model a training run logged (a ``.keras`` archive, loaded with ``safe_mode``)."""
    register_layers()
    return mlflow.keras.load_model(get_run(run_id).data.tags[MODEL_URI_TAG], load_model_kwargs={"safe_mode": True})

