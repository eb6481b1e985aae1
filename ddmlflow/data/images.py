"""Reading 2D images (PNG, JPEG, PGM, TIFF) and the original CIFAR-10 batches.

Every image becomes float32 (H, W, C) in [0, 1]; grey images keep one channel
unless the caller asks for three. Resizing is bilinear, as in Keras'
`image_dataset_from_directory`.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError, require

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pgm", ".tif", ".tiff")
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

_SIXTEEN_BIT = ("I", "I;16", "I;16B", "I;16L")


def read_image(path: str | Path, size: tuple[int, ...] | None = None, channels: int | None = None) -> np.ndarray:
    """One image file -> float32 (H, W, C) in [0, 1], resized to size=(H, W) if given (another length: InputError)."""
    if size is not None:
        require(len(size) == 2, "image_size", tuple(size), f"(H, W) for the 2D image {path}")
    require(channels in (None, 1, 3), "channels", channels, "1, 3 or None (keep the file's)")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in _SIXTEEN_BIT:  # 16-bit grey (PGM, TIFF): keep the precision
                img = Image.fromarray(np.asarray(img, dtype=np.float32) / 65535)
            elif img.mode != "F":
                grey = channels == 1 or (channels is None and img.mode in ("1", "L", "LA"))
                img = img.convert("L" if grey else "RGB")
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            a = np.asarray(img)
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for broken files
        raise InputError("file", str(path), f"unreadable image ({type(e).__name__}: {e})") from None
    a = a.astype(np.float32) / 255 if a.dtype == np.uint8 else np.clip(a.astype(np.float32), 0, 1)
    if a.ndim == 2:
        a = a[..., None]
    if channels == 3 and a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except Exception as e:  # noqa: BLE001 - pickle raises many types for a broken file
        raise InputError("file", str(path), f"unreadable CIFAR-10 batch ({type(e).__name__}: {e})") from None


def cifar_batch_files(folder: Path) -> tuple[list[Path], Path]:
    """The five training batches and the test batch of a `cifar-10-batches-py` folder."""
    train = [folder / f"data_batch_{i}" for i in range(1, 6)]
    test = folder / "test_batch"
    missing = [p.name for p in train + [test] if not p.is_file()]
    require(not missing, "data_dir", str(folder), f"a cifar-10-batches-py folder; missing {missing}")
    return train, test


def read_cifar_batches(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Pickled batches (rows of 3072 bytes, R then G then B planes) -> (n, 32, 32, 3), labels."""
    xs, ys = [], []
    for f in files:
        d = _unpickle(f)
        try:
            x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            y = np.asarray(d[b"labels"], dtype=np.int64)
        except (KeyError, ValueError, TypeError) as e:
            raise InputError("file", str(f), f"not a CIFAR-10 batch ({type(e).__name__}: {e})") from None
        require(len(x) == len(y), "file", str(f), "as many labels as images")
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs).astype(np.float32) / 255, np.concatenate(ys)


def cifar_class_names(folder: Path) -> list[str]:
    meta = folder / "batches.meta"
    if not meta.is_file():
        return list(CIFAR10_CLASSES)
    names = _unpickle(meta).get(b"label_names") or []
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names] or list(CIFAR10_CLASSES)
