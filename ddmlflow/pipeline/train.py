"""Steps 2 (KLW sec. 3.1, 5): the global baseline CNN and the N local CNNs.

One function trains either: ``box=None`` is the global net on whole images,
``box=i`` the local net of box i, its widths divided by ``width_divisor``.

``train_locals_packed`` trains several locals of one device as one program (the
packed executor's worker calls it; the engine is ``packed_training.py``). Each
local keeps its own child run, exactly as when trained alone: the same params
and tags, per-epoch metrics (logged into its run by id while the group trains),
profile, probabilities and model. Its ``train_time_s`` is the group's training
time (the time the local occupied its device; its own share cannot be
measured), also logged as ``group_train_time_s`` with the tag
``ddmlflow.group`` naming the group.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import mlflow
import numpy as np
from mlflow.entities import Param, RunTag
from mlflow.tracking import MlflowClient

from .. import models
from ..config import RunConfig
from ..describe import Role
from ..devices import configure_tensorflow, process_tags
from ..models import register_layers
from ..packed_training import train_packed
from ..serving import model_id
from ..tags import BOX_TAG, EXECUTOR_TAG, GROUP_TAG, MODEL_URI_TAG
from ..tracking import get_run, log_params, monitor_system, retry, say, step_run, work_dir
from ..training import FitConfig, epoch_logger, fit, seed_everything
from .finish import finish_training, log_probs  # noqa: F401 - log_probs: part of this step's API
from .prepared import load_prepared


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
    net = models.build(cfg.model, x.shape[1:], prep.num_classes, width_divisor=divisor, name=name, dropout=cfg.dropout)
    log_params(
        {
            **cfg.params(),
            "decompose_run": decompose_run,
            "box": "global" if box is None else box,
            "input_shape": "x".join(map(str, x.shape[1:])),
            "effective_width_divisor": divisor,
            "box_bounds": "global" if box is None else str(prep.decomposition.boxes[box]),
        }
    )
    fc = FitConfig.of(cfg, prep.augment)  # one augmentation seed for all nets: same rotated volumes
    train_x = prep.augmented_train(box, fc) if prep.augment else data[0]
    summary = fit(
        net,
        (train_x, *data[1:]),
        prep.num_classes,
        fc,
        checkpoint_dir=work_dir("checkpoints", run_id),
    )
    role = Role("global") if box is None else Role("local", box, str(prep.decomposition.boxes[box]))
    finish_training(net, data, summary, role, batch_size=cfg.batch_size)


def _start_run(run_id: str, params: dict, tags: dict) -> None:
    """Params (those not logged yet: a resumed run keeps its own) and tags of a local's run, by id."""
    c = MlflowClient()
    have = retry(c.get_run, run_id).data.params
    retry(
        c.log_batch,
        run_id,
        params=[Param(k, str(v)) for k, v in params.items() if k not in have],
        tags=[RunTag(k, str(v)) for k, v in tags.items()],
    )


def train_locals_packed(
    cfg: RunConfig, decompose_run: str, boxes: list[int], run_ids: list[str], on_trained=None
) -> None:
    """Train the group, then log each local's results; ``on_trained()`` is called in between."""
    device = configure_tensorflow()
    prep = load_prepared(decompose_run)
    group = hashlib.sha1(",".join(run_ids).encode()).hexdigest()[:10]
    for box, run_id in zip(boxes, run_ids):
        x_shape = prep.decomposition.input_shape(box)
        _start_run(
            run_id,
            {
                **cfg.params(),
                "decompose_run": decompose_run,
                "box": box,
                "input_shape": "x".join(map(str, x_shape)),
                "effective_width_divisor": cfg.width_divisor,
                "box_bounds": str(prep.decomposition.boxes[box]),
            },
            {**process_tags(device), BOX_TAG: str(box), GROUP_TAG: group, EXECUTOR_TAG: "packed"},
        )
    say(f"packed group {group}: {len(boxes)} locals as one program on {device}")
    with monitor_system(run_ids):  # the group's CPU/GPU use, in every local's run
        results = train_packed(
            cfg,
            prep,
            boxes,
            run_ids,
            checkpoint_dir=work_dir("checkpoints", f"group-{group}"),
            log_epoch=epoch_logger(run_ids),
        )
    if on_trained is not None:
        on_trained()
    for box, run_id, r in zip(boxes, run_ids, results):
        with step_run(run_id, system_metrics=False):
            finish_training(
                r.model,
                prep.box(box),
                {"train_time_s": r.group_train_time_s, "epochs_run": r.epochs_run},
                Role("local", box, str(prep.decomposition.boxes[box])),
                batch_size=cfg.batch_size,
                extra={"group_train_time_s": r.group_train_time_s},
            )


def load_probs(run_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) class probabilities a training run logged."""
    path = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="probs.npz", dst_path=tempfile.mkdtemp(dir=work_dir("tmp"))
    )
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
