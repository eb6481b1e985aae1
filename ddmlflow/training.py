"""Fitting one network the way every step does: same loss, same early stopping, same logging.

Each finished epoch is checkpointed (``EpochCheckpoint``: weights, optimizer,
dropout seeds, early-stopping state) in a work folder keyed by the MLflow run,
so a killed process resumes from its last finished epoch and ends as an
uninterrupted one would; the MLflow callback skips epochs a previous attempt already
logged, so the history holds every epoch exactly once. With a tracking
server the checkpoint is also kept in the run's artifacts (``checkpoint/``),
so a retry on another machine (a Ray task whose node died) resumes too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from .batches import batch_indices, shuffled_batches, train_batch
from .checkpoint import EarlyStop, load_state, quiet, save_state, training_state
from .config import RunConfig
from .console import keras_verbose
from .errors import require
from .inference import forget_traced
from .models import loss_for
from .optimizers import make_optimizer
from .tracking import is_local_store, logged_steps, retry, say

EPOCH_METRICS = ("accuracy", "loss", "val_accuracy", "val_loss")


@dataclass(frozen=True)
class FitConfig:
    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str = "adam"
    patience: int = 15
    seed: int = 0
    augment: str | None = None
    precision: str = "float32"  # the compute dtype while training (``set_precision``)

    @classmethod
    def of(cls, cfg: RunConfig, augment: str | None = None, seed: int | None = None) -> FitConfig:
        """A CNN's training from the run configuration; ``seed``: the batches' (default the config's: every
        net of a run sees the same batches, the same rotated volumes)."""
        return cls(
            cfg.epochs,
            cfg.batch_size,
            cfg.learning_rate,
            cfg.optimizer,
            cfg.patience,
            cfg.seed if seed is None else seed,
            augment,
            cfg.precision,
        )

    @classmethod
    def coarse(cls, cfg: RunConfig) -> FitConfig:
        """The coarse net's training: its own epochs, batch size, learning rate and stopping rule."""
        return cls(
            cfg.coarse_epochs,
            cfg.coarse_batch_size,
            cfg.coarse_learning_rate,
            cfg.optimizer,
            cfg.coarse_patience,
            cfg.seed,
            precision=cfg.precision,
        )


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Same seed, same numbers: Python, NumPy, TF seeds and (on the CPU) deterministic ops."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def set_precision(model: keras.Model, precision: str) -> keras.Model:
    """Every layer of ``model`` computes in ``precision`` (a Keras dtype policy) but the ``probs`` output,
    which stays float32 (probabilities, losses and the coarse net's inputs; Keras' mixed-precision guide).

    Variables are float32 under every policy, so a net trained mixed and set back to float32 (as the engine
    does before it returns, so logged, evaluated and served nets run float32) keeps its weights bit for bit.
    Call before ``compile`` (``mixed_float16`` wraps the optimizer in a loss scaler there).
    """
    if precision == "mixed_float16":
        import tensorflow as tf

        require(
            bool(tf.config.get_visible_devices("GPU")),
            "precision",
            precision,
            "float32 or mixed_bfloat16 in a process without a GPU (a CPU runs float16 emulated)",
        )
    layers = [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if layer.name != "probs" and not isinstance(layer, keras.layers.InputLayer)
    ]
    if all(layer.dtype_policy.name == precision for layer in layers):
        return model  # keeps its traced functions (float32, the default, changes nothing)
    for layer in layers:
        layer.dtype_policy = precision
    # functions traced under the previous policy would keep computing in it
    model.train_function = model.test_function = model.predict_function = None
    forget_traced(model)
    return model


def compile_model(model: keras.Model, num_classes: int, cfg: FitConfig) -> keras.Model:
    model.compile(
        optimizer=make_optimizer(cfg.optimizer, cfg.learning_rate), loss=loss_for(num_classes), metrics=["accuracy"]
    )
    return model


LogEpoch = Callable[[int, int, dict[str, float]], None]  # (net k, epoch, EPOCH_METRICS) after each epoch


def epoch_logger(run_ids: list[str], suffix: str = "") -> LogEpoch:
    """The engine's one metric logger, for ``fit`` (one net) and ``train_packed`` (net k of a group): net k's
    epoch metrics into run ``run_ids[k]`` with step=epoch, skipping epochs a previous (killed) attempt
    already logged, so each epoch is in the history exactly once. ``suffix`` is added to every name
    (a tuner trial's later executions: ``loss/exec1``)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    done = {rid: logged_steps(rid, "loss" + suffix) for rid in run_ids}

    def log(k: int, epoch: int, metrics: dict[str, float]) -> None:
        rid = run_ids[k]
        if epoch in done[rid]:
            return
        now = int(time.time() * 1000)
        retry(
            client.log_batch, rid, metrics=[Metric(name + suffix, float(v), now, epoch) for name, v in metrics.items()]
        )
        done[rid].add(epoch)

    return log


class EpochLog(keras.callbacks.Callback):
    """Keras' epoch metrics (``EPOCH_METRICS``) to a ``LogEpoch``, as net 0."""

    def __init__(self, log: LogEpoch) -> None:
        super().__init__()
        self.log = log

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.log(0, epoch, {k: float(v) for k, v in (logs or {}).items() if k in EPOCH_METRICS})


class EpochTimes(keras.callbacks.Callback):
    """``time.perf_counter()`` when training starts and after every epoch, for benchmarks and
    ``reproduce --estimate``; ``stamp`` also serves as the packed loop's ``on_epoch`` (net 0 stamps)."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[float] = []

    def stamp(self, net: int = 0, *_: Any) -> None:
        if net == 0:
            self.stamps.append(time.perf_counter())

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.stamp()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.stamp()


class EpochCheckpoint(keras.callbacks.Callback):
    """Early stopping and the epoch checkpoint as one callback, so their states always agree.

    After every epoch: update the early-stopping state, then save weights, BN
    statistics, dropout seeds, optimizer slots and that state to one file,
    atomically (``checkpoint.save_state``). ``restore`` puts all of it back
    before ``fit`` resumes at ``epochs_done``.
    """

    def __init__(self, path: Path | None, stop: EarlyStop | None, mirror: bool = False) -> None:
        super().__init__()
        self.path, self.stop, self.epochs_done, self.mirror = path, stop, 0, mirror

    def restore(self, model: keras.Model) -> None:
        if self.path is None or not self.path.exists():
            return
        meta, arrays = load_state(self.path, training_state(model, model.optimizer))
        self.epochs_done = meta["epochs_done"]
        if self.stop is not None:
            self.stop = EarlyStop.from_arrays(meta["early_stopping"], arrays, "es")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epochs_done = epoch + 1
        if self.stop is not None and self.stop.update(
            epoch, float((logs or {})["val_accuracy"]), self.model.get_weights
        ):
            self.model.stop_training = True
        if self.path is not None:
            es_meta, es_arrays = self.stop.to_arrays("es") if self.stop is not None else (None, {})
            save_state(
                self.path,
                training_state(self.model, self.model.optimizer),
                {"epochs_done": self.epochs_done, "early_stopping": es_meta},
                es_arrays,
            )
            if self.mirror:  # the run's artifact copy, for a retry on another machine
                import mlflow

                retry(mlflow.log_artifact, str(self.path), CHECKPOINT_ARTIFACTS)


CHECKPOINT_ARTIFACTS = "checkpoint"


def mirror_checkpoints() -> bool:
    """Keep checkpoints in the run's artifacts: only with a tracking server (others share no disk)."""
    import mlflow

    return mlflow.active_run() is not None and not is_local_store(mlflow.get_tracking_uri())


def restore_checkpoint(checkpoint_dir: Path) -> bool:
    """An empty local checkpoint folder gets the run's artifact copy (a retry on another node)."""
    import shutil
    import tempfile

    import mlflow

    checkpoint_dir = Path(checkpoint_dir)
    run = mlflow.active_run()
    assert run is not None, "restore_checkpoint runs inside a training's run"
    run_id = run.info.run_id
    if any(checkpoint_dir.iterdir()) or not retry(mlflow.MlflowClient().list_artifacts, run_id, CHECKPOINT_ARTIFACTS):
        return False
    with tempfile.TemporaryDirectory(dir=checkpoint_dir.parent) as tmp:
        got = Path(
            retry(mlflow.artifacts.download_artifacts, run_id=run_id, artifact_path=CHECKPOINT_ARTIFACTS, dst_path=tmp)
        )
        for f in got.iterdir():
            shutil.move(str(f), checkpoint_dir / f.name)
    say(f"resuming from the checkpoint in the artifacts of run {run_id}")
    return True


class _Augmented(keras.utils.PyDataset):
    """Shuffled training batches of whole images, augmented on the fly, then cropped (train only):
    ``batches.train_batch`` for Keras' ``fit``.

    Every draw (the order of an epoch, each sample's angle) is keyed by (seed, epoch,
    sample), not by a generator's state (see ``batches``): nets given the same seed see
    the same samples whichever box they crop, and the contents change from epoch to
    epoch. The epoch is counted
    per batch index (the k-th time batch i is served), because tf.data prefetches
    the next epoch's first batches before Keras announces that epoch.
    ``first_epoch`` shifts the count for a training resumed at that epoch.
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        batch_size: int,
        kind: str | None,
        seed: int,
        crop: Callable[[np.ndarray], np.ndarray] | None = None,
        first_epoch: int = 0,
    ) -> None:
        super().__init__()
        self.x, self.y, self.bs, self.kind, self.seed = x, np.asarray(y), batch_size, kind, int(seed)
        self.crop, self.first_epoch = crop, int(first_epoch)
        self._served: dict[int, int] = {}
        self._training = False  # Keras reads a few batches to infer shapes before training starts
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(np.ceil(len(self.x) / self.bs))

    def on_epoch_begin(self) -> None:
        self._training = True

    def batch(self, epoch: int, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch i of `epoch`: the same for every caller with the same seed."""
        idx = batch_indices(self.seed, epoch, len(self.x), self.bs, i)
        return train_batch(self.x, self.y, idx, self.kind, self.seed, epoch, self.crop)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            k = self._served.get(i, 0)
            if self._training:
                self._served[i] = k + 1
        return self.batch(self.first_epoch + k, i)


def augmented(x: Any, y: Any, cfg: FitConfig, crop: Callable[[np.ndarray], np.ndarray] | None = None) -> _Augmented:
    """Training input for ``fit``: whole images ``x`` augmented by ``cfg.augment``, then ``crop``ped."""
    return _Augmented(x, y, cfg.batch_size, cfg.augment, cfg.seed, crop)


def fit(
    model: keras.Model,
    data: tuple[Any, Any, Any, Any],
    num_classes: int,
    cfg: FitConfig,
    checkpoint_dir: Path | None = None,
    log_to_mlflow: bool = True,
    callbacks: Sequence[Any] = (),
    initial_epoch: int = 0,
) -> dict[str, Any]:
    """Train with early stopping on val_accuracy (best weights restored); returns a summary.

    ``data`` is (x, y, x_val, y_val); x may be ``augmented(...)`` batches (whole images, then cropped).
    With ``checkpoint_dir``, a killed training resumes after its last finished epoch
    and ends with the same weights as an uninterrupted one (see checkpoint.py).
    Extra ``callbacks`` run after each epoch's checkpoint is written. ``initial_epoch``: epochs
    already trained elsewhere (keras-tuner's Hyperband continues a trial's weights).
    ``cfg.precision`` applies while training only: the net comes back computing in float32.
    """
    set_precision(model, cfg.precision)
    try:
        return _fit(model, data, num_classes, cfg, checkpoint_dir, log_to_mlflow, callbacks, initial_epoch)
    finally:
        set_precision(model, "float32")


def _fit(
    model: keras.Model,
    data: tuple[Any, Any, Any, Any],
    num_classes: int,
    cfg: FitConfig,
    checkpoint_dir: Path | None,
    log_to_mlflow: bool,
    callbacks: Sequence[Any],
    initial_epoch: int,
) -> dict[str, Any]:
    x, y, xv, yv = data
    compile_model(model, num_classes, cfg)
    model.optimizer.build(model.trainable_variables)
    # patience 0: no early stopping (KLW trains some nets a fixed 500 epochs)
    stop = EarlyStop(cfg.patience) if cfg.patience > 0 else None
    mirror = checkpoint_dir is not None and mirror_checkpoints()
    if mirror and checkpoint_dir is not None:
        restore_checkpoint(Path(checkpoint_dir))
    ckpt = EpochCheckpoint(None if checkpoint_dir is None else Path(checkpoint_dir) / "fit.npz", stop, mirror)
    ckpt.restore(model)
    if log_to_mlflow:
        import mlflow

        run = mlflow.active_run()
        assert run is not None, "fit(log_to_mlflow=True) logs into the active run"
        callbacks = [EpochLog(epoch_logger([run.info.run_id])), ckpt, *callbacks]
    else:
        callbacks = [ckpt, *callbacks]
    first = max(ckpt.epochs_done, initial_epoch)
    kw: dict[str, Any]
    if isinstance(x, _Augmented) or cfg.augment:
        # our order (``batches``), not Keras' shuffle of the batches (its own RNG: another order per route)
        train, kw = x if isinstance(x, _Augmented) else augmented(x, y, cfg), {"shuffle": False}
        train.first_epoch = first  # a resumed training continues the draws where it stopped
    else:
        train = shuffled_batches(x, y, cfg.batch_size, cfg.seed, first, cfg.epochs)
        kw = {"steps_per_epoch": int(np.ceil(len(x) / cfg.batch_size)), "shuffle": False}
    t0 = time.perf_counter()
    if first < cfg.epochs and not (ckpt.stop is not None and ckpt.stop.stopped):
        model.fit(
            train,
            validation_data=validation_batches(xv, yv, cfg.batch_size),
            epochs=cfg.epochs,
            initial_epoch=first,
            callbacks=callbacks,
            verbose=keras_verbose(),
            **kw,
        )
    train_time = time.perf_counter() - t0
    if ckpt.stop is not None and ckpt.stop.best_weights is not None:
        model.set_weights(ckpt.stop.best_weights)  # as EarlyStopping(restore_best_weights=True)
    if ckpt.path is not None:
        ckpt.path.unlink(missing_ok=True)  # as BackupAndRestore: a finished training leaves no checkpoint
    return {
        "train_time_s": train_time,
        "epochs_run": ckpt.epochs_done,
        "best_epoch": None if ckpt.stop is None else ckpt.stop.best_epoch,
    }


def validation_batches(xv: Any, yv: Any, batch_size: int) -> Any:
    """The validation data as fit() would batch it, without tf.data's autotuning (see ``checkpoint.quiet``)."""
    import tensorflow as tf

    return quiet(tf.data.Dataset.from_tensor_slices((np.asarray(xv), np.asarray(yv))).batch(batch_size))
