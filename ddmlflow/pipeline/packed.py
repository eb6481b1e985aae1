"""Step 2 through the packed executor: the locals of one device trained as one program.

Each local keeps its own child run, exactly as when trained alone: the same
params and tags, per-epoch metrics (logged into its run by id while the group
trains), profile, probabilities and model. Its ``train_time_s`` is the
group's training time (the time the local occupied its device; its own share
cannot be measured), also logged as ``group_train_time_s`` with the tag
``ddmlflow.group`` naming the group.
"""
from __future__ import annotations

import hashlib

from mlflow.entities import Param, RunTag
from mlflow.tracking import MlflowClient

from ..config import RunConfig
from ..describe import Role
from ..devices import configure_tensorflow, process_tags
from ..packing import mlflow_epoch_logger, train_packed
from ..tags import BOX_TAG, EXECUTOR_TAG, GROUP_TAG
from ..tracking import monitor_system, retry, say, step_run, work_dir
from .finish import finish_training
from .prepared import load_prepared


def _start_run(run_id: str, params: dict, tags: dict) -> None:
    """Params (those not logged yet: a resumed run keeps its own) and tags of a local's run, by id."""
    c = MlflowClient()
    have = retry(c.get_run, run_id).data.params
    retry(c.log_batch, run_id, params=[Param(k, str(v)) for k, v in params.items() if k not in have],
          tags=[RunTag(k, str(v)) for k, v in tags.items()])


def train_locals_packed(cfg: RunConfig, decompose_run: str, boxes: list[int], run_ids: list[str],
                        on_trained=None) -> None:
    """Train the group, then log each local's results; ``on_trained()`` is called in between."""
    device = configure_tensorflow()
    prep = load_prepared(decompose_run)
    group = hashlib.sha1(",".join(run_ids).encode()).hexdigest()[:10]
    for box, run_id in zip(boxes, run_ids):
        x_shape = prep.decomposition.input_shape(box)
        _start_run(run_id, {**cfg.params(), "decompose_run": decompose_run, "box": box,
                            "input_shape": "x".join(map(str, x_shape)), "effective_width_divisor": cfg.width_divisor,
                            "box_bounds": str(prep.decomposition.boxes[box])},
                   {**process_tags(device), BOX_TAG: str(box), GROUP_TAG: group,
                    EXECUTOR_TAG: "packed"})
    say(f"packed group {group}: {len(boxes)} locals as one program on {device}")
    with monitor_system(run_ids):  # the group's CPU/GPU use, in every local's run
        results = train_packed(cfg, prep, boxes, run_ids, checkpoint_dir=work_dir("checkpoints", f"group-{group}"),
                               log_epoch=mlflow_epoch_logger(run_ids))
    if on_trained is not None:
        on_trained()
    for box, run_id, r in zip(boxes, run_ids, results):
        with step_run(run_id, system_metrics=False):
            finish_training(r.model, prep.box(box), {"train_time_s": r.group_train_time_s, "epochs_run": r.epochs_run},
                            Role("local", box, str(prep.decomposition.boxes[box])), batch_size=cfg.batch_size, extra={"group_train_time_s": r.group_train_time_s})
