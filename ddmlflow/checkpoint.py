"""Resumable training: early stopping as data, one atomic checkpoint per epoch, a fixed batch order.

A training killed after epoch k (SIGKILL, out of memory, a preempted node) must
end with the same weights as one that never stopped. That needs every piece of
state that the next epochs depend on: weights, batch-norm statistics, dropout
seed generators, optimizer slots, the early-stopping counters and best weights,
and the batch order. Keras' ``BackupAndRestore`` keeps the first two only and
Keras' shuffle depends on how many epochs this process has run, so both routes
(``training.fit`` and the packed group in ``packed_training.py``) use what is here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class EarlyStop:
    """Keras' ``EarlyStopping(val_accuracy, mode="max", restore_best_weights=True)``, as plain state.

    Data, not a callback, so that it is checkpointed with the weights and a packed
    group runs one per branch. ``update`` is Keras 3.15's ``on_epoch_end``: the
    first epoch's weights are the first best; an epoch is better only if strictly
    greater; training stops once ``wait >= patience`` (never at epoch 0); the best
    weights are restored at the end of training, stopped early or not.
    """

    patience: int
    best: float | None = None
    best_epoch: int = 0
    wait: int = 0
    stopped_epoch: int | None = None  # the last epoch trained, when patience ran out
    best_weights: list | None = None

    @property
    def stopped(self) -> bool:
        return self.stopped_epoch is not None

    def update(self, epoch: int, value: float, weights) -> bool:
        """Record epoch ``epoch``'s monitored value (``weights()`` gives the current weights);
        True when training should stop."""
        if self.best_weights is None:
            self.best_weights, self.best_epoch = weights(), epoch
        self.wait += 1
        if self.best is None or value > self.best:
            self.best, self.best_epoch, self.wait = float(value), epoch, 0
            self.best_weights = weights()
            return False
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
        return self.stopped

    def to_arrays(self, prefix: str) -> tuple[dict, dict]:
        """(JSON-able counters, best weights as named arrays) for ``save_state``."""
        meta = {
            "patience": self.patience,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
            "n_best": -1 if self.best_weights is None else len(self.best_weights),
        }
        return meta, {f"{prefix}/best/{i}": np.asarray(w) for i, w in enumerate(self.best_weights or [])}

    @classmethod
    def from_arrays(cls, meta: dict, arrays: dict, prefix: str) -> EarlyStop:
        meta = dict(meta)
        n = meta.pop("n_best")
        return cls(**meta, best_weights=None if n < 0 else [arrays[f"{prefix}/best/{i}"] for i in range(n)])


def training_state(model, optimizer) -> list:
    """Every variable the next epochs depend on: weights, BN statistics, dropout seeds
    (``model.variables`` has the seed generators, ``model.weights`` has not), optimizer slots."""
    return list(model.variables) + list(optimizer.variables)


def save_state(path: Path, variables: list, meta: dict, extra: dict | None = None) -> None:
    """One ``.npz`` (variables, extra arrays, JSON meta) replaced atomically: a process
    killed while saving leaves the previous checkpoint intact, never a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {f"var/{i}": np.asarray(v) for i, v in enumerate(variables)}
    arrays.update(extra or {})
    arrays["meta"] = np.array(json.dumps(meta))
    tmp = path.with_name(path.name + ".tmp.npz")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_state(path: Path, variables: list) -> tuple[dict, dict]:
    """Assign a checkpoint's variables (same order as saved); returns (meta, all arrays)."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    for i, v in enumerate(variables):
        v.assign(arrays[f"var/{i}"])
    return json.loads(str(arrays["meta"])), arrays


def quiet(ds: Any) -> Any:
    """``ds`` without tf.data's autotuning thread. Deleting an autotuned iterator waits for that
    thread: in the packed executor's second worker ``model.fit`` hung ~35 s after its last epoch
    (py-spy: ``RootDataset::Iterator::~Iterator`` waiting in ``UnboundedThreadPool``)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)
