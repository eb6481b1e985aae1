"""The one batch source of every training: sample order, augmentation, crop.

The process, packed and Ray executors, a resumed training and a keras-tuner
trial all draw their training batches here, so at one seed they see the same
pixels:

* the order of epoch ``e`` is ``epoch_order(seed, e, n)``, a function of (seed, epoch) only;
* sample ``i``'s augmentation in epoch ``e`` comes from its own generator, keyed by
  (seed, e, i) with ``i`` its index in the data set: not by its batch or its place in
  the batch, so how samples are grouped into batches changes no sample;
* augmentation transforms the whole image, then each net crops its box: every local
  sees a crop of the very volume the global net sees rotated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .checkpoint import quiet
from .data import augment_batch


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The sample order of one epoch, a function of (seed, epoch) only: a resumed
    training sees exactly the batches an uninterrupted one would."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(seed: int, epoch: int, n: int, batch_size: int, i: int) -> np.ndarray:
    """The data-set indices of batch ``i`` of ``epoch``, in epoch order."""
    return epoch_order(seed, epoch, n)[i * batch_size : (i + 1) * batch_size]


def sample_rngs(seed: int, epoch: int, idx: np.ndarray) -> list[np.random.Generator]:
    """One generator per sample, keyed by (seed, epoch, sample index)."""
    return [np.random.default_rng([seed, epoch, int(i)]) for i in idx]


def rows(x: Any, idx: np.ndarray) -> np.ndarray:
    """``x[idx]``, read in ascending index order (sequential reads of a memory map), returned in ``idx``'s order."""
    order = np.argsort(idx, kind="stable")
    out = np.empty((len(idx), *x.shape[1:]), dtype=x.dtype)
    out[order] = np.asarray(x[idx[order]])
    return out


def train_batch(
    x: Any,
    y: Any,
    idx: np.ndarray,
    kind: str | None,
    seed: int,
    epoch: int,
    crop: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``idx`` of whole images ``x``, each augmented (``kind``) by its own draw, then ``crop``ped."""
    xb = augment_batch(kind, rows(x, idx), sample_rngs(seed, epoch, idx))
    return (xb if crop is None else np.ascontiguousarray(crop(xb))), np.asarray(y)[idx]


def shuffled_batches(x: Any, y: Any, batch_size: int, seed: int, first_epoch: int, epochs: int) -> Any:
    """Without augmentation: tf.data batches of epochs ``first_epoch .. epochs-1`` in ``epoch_order``,
    gathered in the graph (one pipeline for all epochs)."""
    import tensorflow as tf

    n = len(x)
    order = np.stack([epoch_order(seed, e, n) for e in range(first_epoch, max(epochs, first_epoch + 1))])
    xt, yt = tf.constant(np.asarray(x)), tf.constant(np.asarray(y))
    ds = tf.data.Dataset.from_tensor_slices(order).flat_map(
        lambda o: tf.data.Dataset.from_tensor_slices(o).batch(batch_size)
    )
    return quiet(ds.map(lambda i: (tf.gather(xt, i), tf.gather(yt, i))).prefetch(2))
