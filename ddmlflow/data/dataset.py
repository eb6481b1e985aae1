"""The one type every loader returns, and the knobs every loader takes.

Whatever the source (generated shapes, CIFAR batches, a JPEG tree, CT scans),
the pipeline sees the same thing: float32 arrays in [0, 1] with a trailing
channel axis, int64 labels, class names and a provenance record saying where
the arrays came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, require


@dataclass
class Dataset:
    """Train/validation arrays: x (n, H, W, C) or (n, H, W, D, C) in [0, 1], y int64."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    class_names: list[str]
    provenance: dict = field(default_factory=dict)
    augment: str | None = None  # applied to training batches only, see augment_batch

    def __post_init__(self) -> None:
        self.class_names = [str(c) for c in self.class_names]
        k = len(self.class_names)
        require(k >= 2, "class_names", self.class_names, "at least two classes")
        for part in ("train", "val"):
            x = np.asarray(getattr(self, f"x_{part}"), dtype=np.float32)
            y = np.asarray(getattr(self, f"y_{part}")).astype(np.int64, copy=False).reshape(-1)
            require(x.ndim in (4, 5), f"x_{part}", x.shape, "(n, H, W, C) or (n, H, W, D, C)")
            require(len(x) == len(y), f"y_{part}", len(y), f"one label per sample ({len(x)})")
            require(len(y) > 0, f"x_{part}", 0, "at least one sample")
            if y.min() < 0 or y.max() >= k:
                raise InputError(
                    f"y_{part}",
                    int(y.max() if y.max() >= k else y.min()),
                    f"labels out of range: 0..{k - 1} for {k} classes",
                )
            if x.min() < 0 or x.max() > 1:
                raise InputError(f"x_{part}", (float(x.min()), float(x.max())), "values in [0, 1]")
            setattr(self, f"x_{part}", x)
            setattr(self, f"y_{part}", y)
        require(
            self.x_train.shape[1:] == self.x_val.shape[1:],
            "x_val",
            self.x_val.shape[1:],
            f"the training sample shape {self.x_train.shape[1:]}",
        )
        per_class = lambda y: np.bincount(y, minlength=k).tolist()  # noqa: E731
        self.provenance = {
            **self.provenance,
            "counts": {
                "train": len(self.y_train),
                "val": len(self.y_val),
                "train_per_class": per_class(self.y_train),
                "val_per_class": per_class(self.y_val),
            },
        }

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def spatial_ndim(self) -> int:
        """2 for images, 3 for volumes: the decomposition reads it, nothing else branches."""
        return self.x_train.ndim - 2

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.x_train)}, val={len(self.x_val)}, "
            f"input_shape={self.input_shape}, classes={self.num_classes})"
        )


@dataclass
class LoadArgs:
    """What `load` was asked for, handed unchanged to the chosen loader."""

    data_dir: Path | None = None
    seed: int = 0
    cache_dir: str | None = None
    image_size: tuple[int, ...] | None = None
    n_train: int | None = None
    n_val: int | None = None
    progress: bool = True

    def size(self, ndim: int, default: tuple[int, ...] | None) -> tuple[int, ...] | None:
        """image_size checked against the data set's spatial dimension (len(shape) - 1)."""
        if self.image_size is None:
            return default
        require(
            len(self.image_size) == ndim,
            "image_size",
            self.image_size,
            f"{ndim} positive integers ({'H, W' if ndim == 2 else 'H, W, D'})",
        )
        return tuple(self.image_size)


def pick(n_avail: int, n_req: int | None, rng: np.random.Generator, param: str) -> np.ndarray:
    """A seeded random order of n_req (default: all) of n_avail samples.

    Every loader returns its arrays shuffled, so x[:100] is never one class only.
    """
    if n_req is not None:
        require(n_req <= n_avail, param, n_req, f"at most {n_avail} (what the data holds)")
    return rng.permutation(n_avail)[: n_avail if n_req is None else n_req]


def provenance(source: object, key: str | None, seed: int, params: dict) -> dict:
    """Where the arrays came from; Dataset adds the counts itself."""
    return {"source": str(source), "cache_key": key, "seed": seed, "preprocessing": params}
