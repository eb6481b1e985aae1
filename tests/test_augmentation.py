"""CT augmentation: the whole volume is rotated, then cropped, one draw per sample for every net."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ddmlflow import decomposition
from ddmlflow.data.ct import ROTATE3D_ANGLES
from ddmlflow.pipeline.prepared import Prepared
from ddmlflow.training import FitConfig


def _prepared(n=10, shape=(16, 16, 4, 1)):
    rng = np.random.default_rng(0)
    x = np.zeros((n, *shape), np.float32)
    for i in range(n):  # an off-centre bright block per volume: every rotation moves it
        r, c = rng.integers(1, 11, 2)
        x[i, r : r + 5, c : c + 5] = rng.uniform(0.5, 1.0)
    y = np.arange(n) % 2
    d = decomposition.make("2x2x1", shape)
    return Prepared(x, y, x[:2], y[:2], ["a", "b"], d, "t", "rotate3d")


def _rot(v, angle):
    return np.clip(ndimage.rotate(v, angle, axes=(1, 0), reshape=False), 0, 1)


def _epoch(ds, _):
    """What Keras asks for in one training epoch (announced first, then each batch once)."""
    ds.on_epoch_begin()
    out = [ds[i] for i in range(len(ds))]
    ds.on_epoch_end()
    return out


def test_locals_see_crops_of_one_rotated_volume_and_batches_change_by_epoch():
    prep = _prepared()
    d = prep.decomposition
    cfg = FitConfig(epochs=2, batch_size=4, learning_rate=1e-3, seed=3)
    whole = prep.augmented_train(None, cfg)  # what the global net trains on
    assert whole[0][0].shape == (4, 16, 16, 4, 1)  # Keras reads batches before training: no epoch counted
    g = [_epoch(whole, e) for e in range(2)]
    for box in range(d.n):
        mine = prep.augmented_train(box, cfg)  # the local's own pipeline, as train_network builds it
        local = [_epoch(mine, e) for e in range(2)]
        for e in range(2):
            for (xg, yg), (xl, yl) in zip(g[e], local[e]):
                np.testing.assert_array_equal(xl, d.crop(xg, box))
                np.testing.assert_array_equal(yl, yg)
    # each served volume is one training volume rotated by one keras-io angle about the volume's centre;
    # a local's crop of it is not its own crop rotated about the crop's centre (the old behaviour)
    for xb, yb in g[0]:
        for v, label in zip(xb, yb):
            found = [
                (i, a)
                for i in range(len(prep.x_train))
                for a in ROTATE3D_ANGLES
                if np.allclose(v, _rot(prep.x_train[i], a), atol=1e-6)
            ]
            assert len(found) == 1 and prep.y_train[found[0][0]] == label
            i, a = found[0]
            assert not np.allclose(d.crop(v[None], 0), _rot(d.crop(prep.x_train[i][None], 0)[0], a)[None])
    # new order and new angles each epoch; every sample once per epoch; labels follow their volumes
    assert not all(np.array_equal(a[1], b[1]) and np.allclose(a[0], b[0]) for a, b in zip(g[0], g[1]))
    for e in range(2):
        assert sorted(np.concatenate([yb for _, yb in g[e]]).tolist()) == sorted(prep.y_train.tolist())
    # another seed, other draws
    other = _epoch(prep.augmented_train(None, FitConfig(epochs=1, batch_size=4, learning_rate=1e-3, seed=4)), 0)
    assert not all(np.allclose(a[0], b[0]) for a, b in zip(g[0], other))
