"""Data sets of the papers plus generated offline defaults; one `Dataset` out of every loader.

    ds = load("shapes2d")                       # the default: generated, offline, < 1 s
    ds = load("cifar10", data_dir="~/cifar-10-batches-py")
    ds.x_train.shape, ds.num_classes, ds.spatial_ndim

`read_input` reads one file for prediction the way the loaders read theirs;
`augment_batch` applies a Dataset's training augmentation to a batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import InputError, require
from .ct import NIFTI_SUFFIXES, is_nifti, read_volume, rotate3d
from .dataset import Dataset, LoadArgs
from .generated import shapes2d, shapes3d
from .images import IMAGE_SUFFIXES, read_image
from .papers import cifar10, mosmed, tf_flowers, yale_b
from .tree import load_folder

__all__ = ["DATASETS", "Dataset", "load", "read_input", "augment_batch"]

DATASETS = ("shapes2d", "shapes3d", "cifar10", "tf_flowers", "yale_b", "mosmed", "folder")
GENERATED = ("shapes2d", "shapes3d")
AUGMENTATIONS = ("rotate3d",)
_LOADERS: dict[str, Callable[[LoadArgs], Dataset]] = {
    "shapes2d": shapes2d,
    "shapes3d": shapes3d,
    "cifar10": cifar10,
    "tf_flowers": tf_flowers,
    "yale_b": yale_b,
    "mosmed": mosmed,
    "folder": load_folder,
}


def _count(param: str, n: int | None) -> int | None:
    ok = n is None or (isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1)
    require(ok, param, n, "a positive integer or None (the data set's default)")
    return None if n is None else int(n)


def load(
    name: str,
    data_dir: str | None = None,
    seed: int = 0,
    cache_dir: str | None = None,
    image_size: tuple[int, ...] | None = None,
    n_train: int | None = None,
    n_val: int | None = None,
    progress: bool = True,
) -> Dataset:
    """Load (prepare once, then from the cache) the data set `name`, one of DATASETS.

    image_size: (H, W) or (H, W, D) to resize to (default: the data set's own size).
    n_train, n_val: counts for generated sets; a seeded random subset for real ones.
    Arrays come in a seeded random order.
    """
    require(name in DATASETS, "dataset", name, f"one of {', '.join(DATASETS)}")
    require(
        isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0,
        "seed",
        seed,
        "a non-negative integer",
    )
    if image_size is not None:
        ok = (
            isinstance(image_size, (tuple, list))
            and len(image_size) in (2, 3)
            and all(isinstance(s, (int, np.integer)) and s >= 1 for s in image_size)
        )
        require(ok, "image_size", image_size, "(H, W) or (H, W, D) positive integers, or None")
        image_size = tuple(int(s) for s in image_size)
    if name in GENERATED:
        require(
            data_dir is None,
            "data_dir",
            data_dir,
            f"none: '{name}' is generated; use dataset='folder' to load a folder",
        )
    args = LoadArgs(
        Path(os.fspath(data_dir)).expanduser() if data_dir is not None else None,
        int(seed),
        cache_dir,
        image_size,
        _count("n_train", n_train),
        _count("n_val", n_val),
        bool(progress),
    )
    return _LOADERS[name](args)


def read_input(path: str, input_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """One file for prediction, float32 in [0, 1], read as the loaders read theirs.

    An image -> (H, W, C); a NIfTI scan -> (H, W, D, 1) by the CT preprocessing; both
    resized to input_shape when given. A .npy -> as stored (one sample or a batch).
    """
    p = Path(path)
    require(p.is_file(), "file", str(path), "an existing file")
    name = p.name.lower()
    shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
    if name.endswith(".npy"):
        try:
            a = np.load(p, allow_pickle=False).astype(np.float32)
        except Exception as e:  # noqa: BLE001 - numpy raises several types for a broken file
            raise InputError("file", str(p), f"unreadable .npy array ({type(e).__name__}: {e})") from None
        require(
            shape is None or a.shape in (shape, (len(a), *shape)),
            "file",
            str(p),
            f"an array of shape {shape} or a batch of them; got {a.shape}",
        )
        return a
    if is_nifti(name):
        require(
            shape is None or (len(shape) == 4 and shape[-1] == 1),
            "input_shape",
            shape,
            f"(H, W, D, 1) for the NIfTI volume {p}",
        )
        return read_volume(p, shape[:3] if shape else None)
    require(
        name.endswith(IMAGE_SUFFIXES),
        "file",
        str(p),
        f"a file ending in one of {' '.join(IMAGE_SUFFIXES + NIFTI_SUFFIXES)} .npy",
    )
    require(
        shape is None or (len(shape) == 3 and shape[-1] in (1, 3)),
        "input_shape",
        shape,
        f"(H, W, C) with C 1 or 3 for the image {p}",
    )
    return read_image(p, shape[:2] if shape else None, shape[-1] if shape else None)


def augment_batch(kind: str | None, x: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
    """Training augmentation named by Dataset.augment, sample ``k`` drawn from ``rngs[k]``; None returns x
    unchanged."""
    if kind is None:
        return x
    require(kind in AUGMENTATIONS, "augment", kind, f"None or one of {', '.join(AUGMENTATIONS)}")
    return rotate3d(x, rngs)
