"""The local nets of one device trained as one program: the engine of the packed executor.

KLW's local nets are small: on a CPU a separately trained local spends most of
its step in per-step overhead (Python, op dispatch, tiny kernels), so N of them
one after another cost nearly as much as the global net although they need ~1/N
of its FLOPs. Here one compiled TensorFlow function trains all of them, an epoch
per call: one input pipeline of whole images, each branch cropping its box inside the graph
(so any box sizes pack together: type A, type B, explicit lists), the N losses
summed. The branches share no variable, so the gradient of the sum with respect
to a branch's weights is that branch's own gradient, and each branch keeps its
own weights, optimizer (Adam/SGD/RMSprop slots and step count), batch-norm
statistics, dropout seeds and initialisation seed (``cfg.seed + 1 + box``, as
``pipeline/train.py``). The batches come from the one batch source (``batches``:
epoch e's order and each sample's augmentation keyed by the seed, not by the net),
the whole images augmented once and cropped by each branch, exactly what a local
trained alone sees: at one seed its weights equal separate training's to float
rounding, with augmentation too (tests/test_packed_training.py). Validation runs in
batches of ``VAL_BATCH`` (a mean over samples either way).

Early stopping is per branch (``checkpoint.EarlyStop``, Keras' semantics): a
branch whose patience ran out leaves the compiled step (its weights, optimizer
and statistics stop changing) and reports its best epoch's weights; the group
stops when every branch has. After every epoch the whole group is checkpointed
atomically, so a killed group resumes after its last finished epoch with the
same results as an uninterrupted one.

On a CPU the branches run side by side, one thread per op (``configure_threads``):
tiny kernels split across cores cost more in synchronisation than they gain,
while independent branches keep every core busy (the README's "CPU threads" has the
measured step times).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from . import models
from .batches import batch_indices, shuffled_batches, train_batch
from .checkpoint import EarlyStop, load_state, quiet, save_state, training_state
from .devices import threads
from .errors import require
from .optimizers import apply_adam_fused, fusable_adam
from .training import EPOCH_METRICS, FitConfig, LogEpoch, compile_model, seed_everything, set_precision

if TYPE_CHECKING:
    from .config import RunConfig

# a compiled program of the branches (tf.function): run(iterator, steps) or step(x, y)
Program = Callable[..., Any]

VAL_BATCH = 256
CHECKPOINT = "packed.npz"


def cpu_threads() -> tuple[int, int]:
    """(intra-op, inter-op) threads for a packed group on a CPU: one per op, branches on every core."""
    return 1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def configure_threads() -> str | None:
    """Apply ``cpu_threads`` in a process that has not run a TensorFlow op yet; returns what was set.

    Only where no GPU is visible (``CUDA_VISIBLE_DEVICES`` empty or -1): on a GPU the
    host threads only feed the device. The user's own ``TF_NUM_INTRAOP_THREADS`` /
    ``TF_NUM_INTEROP_THREADS`` win. Returns None when nothing was changed.
    """
    if "TF_NUM_INTRAOP_THREADS" in os.environ or "TF_NUM_INTEROP_THREADS" in os.environ:
        return None
    import tensorflow as tf

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if (visible.strip() not in ("", "-1")) if visible is not None else tf.config.list_physical_devices("GPU"):
        return None
    intra, inter = cpu_threads()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # TensorFlow already started: keep its threads
        return None
    return threads()


@dataclass
class BranchResult:
    """One local net of a packed group, as if trained alone."""

    box: int
    run_id: str
    model: keras.Model  # standalone, box-shaped input, as models.build(...) returns
    history: dict[str, list[float]]  # EPOCH_METRICS -> one value per epoch run
    epochs_run: int
    best_epoch: int | None  # None without early stopping (patience 0)
    group_train_time_s: float  # the whole group's time in training (its share is not known)


@dataclass
class _Branch:
    box: int
    run_id: str
    net: keras.Model
    crop: tuple[slice, ...]  # index of the box in a batch of whole images
    stop: EarlyStop | None
    history: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in EPOCH_METRICS})
    epochs_run: int = 0

    @property
    def active(self) -> bool:
        return self.stop is None or not self.stop.stopped


def build_branches(cfg: RunConfig, prep: Any, boxes: list[int], run_ids: list[str]) -> list[_Branch]:
    """One compiled local net per box, each initialised from its own seed as a separate local would be."""
    dec = prep.decomposition
    out = []
    for box, run_id in zip(boxes, run_ids):
        seed_everything(cfg.seed + 1 + box)
        net = models.build(
            cfg.model,
            dec.input_shape(box),
            prep.num_classes,
            width_divisor=cfg.width_divisor,
            name=f"local_{box:02d}",
            dropout=cfg.dropout,  # as train_network builds it
        )
        set_precision(net, cfg.precision)  # before compile (mixed_float16 wraps the optimizer there)
        compile_model(net, prep.num_classes, FitConfig.of(cfg, prep.augment))
        net.optimizer.build(net.trainable_variables)
        crop = (slice(None),) + dec.boxes[box].slices + (slice(None),)
        out.append(_Branch(box, run_id, net, crop, EarlyStop(cfg.patience) if cfg.patience > 0 else None))
    return out


def _correct(p: Any, y: Any) -> Any:
    """Keras' "accuracy" for these nets: sparse categorical, or binary at 0.5 for one sigmoid unit."""
    import tensorflow as tf

    y = tf.cast(tf.reshape(y, [-1]), tf.int64)
    pred = tf.cast(p[:, 0] > 0.5, tf.int64) if p.shape[-1] == 1 else tf.argmax(p, axis=-1)
    return tf.reduce_sum(tf.cast(tf.equal(pred, y), tf.float32))


def apply_gradients(optimizer: Any, grads: list[Any], weights: list[Any]) -> None:
    """``optimizer.apply_gradients``; a plain Adam with its scalars once per branch (``optimizers.apply_adam_fused``,
    bitwise Keras' update): Keras' per-variable scalars were much of a many-local group's graph and step."""
    if fusable_adam(optimizer) and all(w.dtype == "float32" for w in weights):  # float32 weights: as fused
        apply_adam_fused(optimizer, grads, weights)
    else:
        optimizer.apply_gradients(zip(grads, weights))


def make_train_epoch(branches: list[_Branch]) -> Program:
    """One compiled program for the given branches: ``run(iterator, steps)`` trains ``steps`` batches.

    Per batch: crop each box, forward every branch, sum the losses, one optimizer
    step per branch. Gradients come from one tape over the summed loss; the
    branches share no variable, so each receives exactly its own loss's gradient.
    The batch loop and the metric sums stay inside the graph (like Keras'
    ``steps_per_execution``), so Python runs once per epoch, not once per batch.
    Returns per-branch (summed loss * batch size, correct count) and the samples seen.
    """
    import tensorflow as tf

    n = len(branches)

    def step(x: Any, y: Any) -> tuple[Any, Any]:
        with tf.GradientTape() as tape:
            preds = [b.net(x[b.crop], training=True) for b in branches]
            losses = [b.net.compute_loss(x=None, y=y, y_pred=p, training=True) for b, p in zip(branches, preds)]
            total = tf.add_n([b.net.optimizer.scale_loss(lo) for b, lo in zip(branches, losses)])  # fp16: scaled
        weights = [b.net.trainable_weights for b in branches]
        grads = tape.gradient(total, weights)
        for b, g, w in zip(branches, grads, weights):
            apply_gradients(b.net.optimizer, g, w)
        return tf.stack(losses), tf.stack([_correct(p, y) for p in preds])

    @tf.function
    def run(iterator: Any, steps: Any) -> tuple[Any, Any, Any]:
        loss, correct, seen = tf.zeros([n]), tf.zeros([n]), tf.constant(0.0)
        for _ in tf.range(steps):
            x, y = next(iterator)
            lo, co = step(x, y)
            m = tf.cast(tf.shape(x)[0], tf.float32)
            loss, correct, seen = loss + lo * m, correct + co, seen + m
        return loss, correct, seen

    program: Program = run
    return program


def make_eval_step(branches: list[_Branch]) -> Program:
    """Per-branch (summed loss, correct count) of a validation batch, inference mode."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def step(x: Any, y: Any) -> tuple[Any, Any]:
        preds = [b.net(x[b.crop], training=False) for b in branches]
        n = tf.cast(tf.shape(x)[0], tf.float32)
        losses = [b.net.compute_loss(x=None, y=y, y_pred=p, training=False) * n for b, p in zip(branches, preds)]
        return tf.stack(losses), tf.stack([_correct(p, y) for p in preds])

    program: Program = step
    return program


def _train_batches(prep: Any, cfg: RunConfig, first_epoch: int) -> Any:
    """One tf.data pipeline of whole-image batches for every epoch from ``first_epoch``,
    as ``batches`` orders and augments them for ``fit``."""
    import tensorflow as tf

    x, y = np.asarray(prep.x_train), np.asarray(prep.y_train)
    if not prep.augment:
        return shuffled_batches(x, y, cfg.batch_size, cfg.seed, first_epoch, cfg.epochs)

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for epoch in range(first_epoch, cfg.epochs):
            for i in range(-(-len(x) // cfg.batch_size)):  # whole images: every branch crops the same ones
                idx = batch_indices(cfg.seed, epoch, len(x), cfg.batch_size, i)
                yield train_batch(x, y, idx, prep.augment, cfg.seed, epoch)

    spec = (tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype)), tf.TensorSpec((None,), tf.as_dtype(y.dtype)))
    return quiet(tf.data.Dataset.from_generator(batches, output_signature=spec).prefetch(2))


def _validate(branches: list[_Branch], step: Program, xv: Any, yv: Any) -> tuple[np.ndarray, np.ndarray]:
    loss, correct = np.zeros(len(branches)), np.zeros(len(branches))
    for s in range(0, len(xv), VAL_BATCH):
        lo, co = step(np.asarray(xv[s : s + VAL_BATCH]), np.asarray(yv[s : s + VAL_BATCH]))
        loss += lo.numpy()
        correct += co.numpy()
    return loss / len(xv), correct / len(xv)


def _save(path: Path, branches: list[_Branch], epochs_done: int) -> None:
    variables: list[Any] = []
    extra: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"epochs_done": epochs_done, "branches": []}
    for k, b in enumerate(branches):
        variables += training_state(b.net, b.net.optimizer)
        es_meta, es_arrays = b.stop.to_arrays(f"es{k}") if b.stop is not None else (None, {})
        extra.update(es_arrays)
        meta["branches"].append(
            {"box": b.box, "early_stopping": es_meta, "history": b.history, "epochs_run": b.epochs_run}
        )
    save_state(path, variables, meta, extra)


def _restore(path: Path, branches: list[_Branch]) -> int:
    """Load a group checkpoint into ``branches``; returns the number of finished epochs."""
    import json

    with np.load(path) as z:
        saved = [m["box"] for m in json.loads(str(z["meta"]))["branches"]]
    if saved != [b.box for b in branches]:
        raise RuntimeError(
            f"checkpoint {path} holds boxes {saved}, not {[b.box for b in branches]}; remove it to start afresh"
        )
    meta, arrays = load_state(path, [v for b in branches for v in training_state(b.net, b.net.optimizer)])
    for k, (b, m) in enumerate(zip(branches, meta["branches"])):
        b.history, b.epochs_run = m["history"], m["epochs_run"]
        if b.stop is not None:
            b.stop = EarlyStop.from_arrays(m["early_stopping"], arrays, f"es{k}")
    epochs_done: int = meta["epochs_done"]
    return epochs_done


def train_packed(
    cfg: RunConfig,
    prep: Any,
    boxes: list[int],
    run_ids: list[str],
    checkpoint_dir: Path | None,
    log_epoch: LogEpoch | None = None,
) -> list[BranchResult]:
    """Train the local nets of ``boxes`` as one program; one ``BranchResult`` per box, in order.

    ``cfg``: a RunConfig (model, width_divisor, epochs, batch_size, learning_rate,
    optimizer, patience, seed). ``prep``: a pipeline.prepared.Prepared.
    ``log_epoch(k, epoch, metrics)`` is called after every epoch for each branch k
    still training (``training.epoch_logger``: the same logger as ``fit``'s). With ``checkpoint_dir`` the group
    resumes after its last finished epoch; the checkpoint is removed at the end. ``cfg.precision``
    applies while training, as in ``training.fit``.
    """
    require(len(boxes) == len(run_ids) and len(boxes) > 0, "boxes", boxes, "one run id per box, at least one box")
    branches = build_branches(cfg, prep, boxes, run_ids)
    try:
        return _train(cfg, prep, branches, checkpoint_dir, log_epoch)
    finally:
        for b in branches:
            set_precision(b.net, "float32")  # as fit(): the nets come back computing in float32


def _train(
    cfg: RunConfig, prep: Any, branches: list[_Branch], checkpoint_dir: Path | None, log_epoch: LogEpoch | None
) -> list[BranchResult]:
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT
    first = _restore(path, branches) if path is not None and path.exists() else 0
    xv, yv = prep.x_val, prep.y_val
    n_batches = int(np.ceil(len(prep.x_train) / cfg.batch_size))
    batches = iter(_train_batches(prep, cfg, first))  # one iterator across epochs: exactly n_batches each
    active, compiled = [b for b in branches if b.active], None
    t0 = time.perf_counter()
    for epoch in range(first, cfg.epochs):
        if not active:
            break
        if compiled is None or len(compiled[0]) != len(active):  # a stopped branch leaves the program
            compiled = active, make_train_epoch(active), make_eval_step(active)
        _, train, evaluate = compiled
        loss, correct, seen = (t.numpy() for t in train(batches, n_batches))
        val_loss, val_acc = _validate(active, evaluate, xv, yv)
        for k, b in enumerate(active):
            metrics = {
                "accuracy": correct[k] / seen,
                "loss": loss[k] / seen,
                "val_accuracy": float(val_acc[k]),
                "val_loss": float(val_loss[k]),
            }
            for name, v in metrics.items():
                b.history[name].append(float(v))
            b.epochs_run = epoch + 1
            if b.stop is not None:
                b.stop.update(epoch, metrics["val_accuracy"], b.net.get_weights)
            if log_epoch is not None:
                log_epoch(branches.index(b), epoch, metrics)
        if path is not None:
            _save(path, branches, epoch + 1)
        active = [b for b in active if b.active]
    train_time = time.perf_counter() - t0
    for b in branches:
        if b.stop is not None and b.stop.best_weights is not None:
            b.net.set_weights(b.stop.best_weights)  # restore_best_weights, as fit()
    if path is not None:
        path.unlink(missing_ok=True)
    return [
        BranchResult(
            b.box, b.run_id, b.net, b.history, b.epochs_run, None if b.stop is None else b.stop.best_epoch, train_time
        )
        for b in branches
    ]
