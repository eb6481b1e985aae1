"""Class-per-folder trees of images or NIfTI volumes -> Dataset (and the `folder` data set).

    root/<class>/<file>                                 split train/val with the seed
    root/train/<class>/..., root/val|test/<class>/...   split as given

The named real data sets (CIFAR-10 JPEGs, TF-Flowers, Yale B, MosMed) are such
trees too; they only differ in class folders, split fractions and sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from ..errors import InputError, require
from .cache import Progress, cache_key, cache_root, load_or_build
from .ct import NIFTI_SUFFIXES, is_nifti, read_volume
from .dataset import Dataset, LoadArgs, pick, provenance
from .images import IMAGE_SUFFIXES, read_image

Item = tuple[Path, int]
SUFFIXES = IMAGE_SUFFIXES + NIFTI_SUFFIXES


def read_file(path: str | Path, size: tuple[int, ...] | None = None, channels: int | None = None) -> np.ndarray:
    """An image -> (H, W, C), a NIfTI scan -> (H, W, D, 1) (CT preprocessing), in [0, 1]."""
    if is_nifti(path):
        return read_volume(path, size)
    return read_image(path, size, channels)


def scan(
    root: Path, skip: Callable[[Path], bool] | None = None, folders: dict[str, str] | None = None, min_classes: int = 2
) -> dict[str, list[Path]]:
    """{class name: sorted files}; `folders` maps fixed sub-folder names to class names."""
    require(root.is_dir(), "data_dir", str(root), "an existing folder")
    if folders:
        dirs = [(name, root / sub) for sub, name in folders.items()]
        missing = [sub for sub, _ in folders.items() if not (root / sub).is_dir()]
        require(not missing, "data_dir", str(root), f"a folder with sub-folders {list(folders)}; missing {missing}")
    else:
        dirs = [(d.name, d) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    classes = {}
    for name, d in dirs:
        files = sorted(
            f for f in d.iterdir() if f.is_file() and f.name.lower().endswith(SUFFIXES) and not (skip and skip(f))
        )
        if files:
            classes[name] = files
    require(
        bool(classes), "data_dir", str(root), f"one sub-folder per class holding {' '.join(SUFFIXES)} files; found none"
    )
    require(
        len(classes) >= min_classes,
        "data_dir",
        str(root),
        f"at least two classes (one sub-folder each); found only {list(classes)}",
    )
    return classes


def _split_dirs(root: Path) -> tuple[Path, Path] | None:
    for val in ("val", "validation", "test"):
        if (root / "train").is_dir() and (root / val).is_dir():
            return root / "train", root / val
    return None


def tree_items(
    root: Path,
    val_fraction: float,
    seed: int,
    skip: Callable[[Path], bool] | None = None,
    folders: dict[str, str] | None = None,
) -> tuple[list[str], list[Item], list[Item], str]:
    """Class names, train and val (file, label) lists, and how they were split."""
    dirs = _split_dirs(root)
    if dirs:
        tr, va = scan(dirs[0], skip, folders), scan(dirs[1], skip, folders, min_classes=1)
        names = list(tr)
        extra = sorted(set(va) - set(tr))
        require(not extra, "data_dir", str(dirs[1]), f"only the training classes {names}; labels out of range: {extra}")
        as_items = lambda cl: [(f, names.index(c)) for c, fs in cl.items() for f in fs]  # noqa: E731
        return names, as_items(tr), as_items(va), f"{dirs[0].name}/ and {dirs[1].name}/ folders"
    cl = scan(root, skip, folders)
    names = list(cl)
    items = [(f, i) for i, c in enumerate(names) for f in cl[c]]
    n_val = min(max(round(val_fraction * len(items)), 1), len(items) - 1)
    perm = np.random.default_rng(seed).permutation(len(items))
    return (
        names,
        [items[i] for i in perm[n_val:]],
        [items[i] for i in perm[:n_val]],
        f"random {1 - val_fraction:.0%}/{val_fraction:.0%} split with seed {seed}",
    )


def read_all(files: list[Path], reader: Callable[[Path], np.ndarray], bar: Progress) -> np.ndarray:
    """Read into one array; grey and RGB images mix (grey is repeated), other shapes do not."""
    out, first = None, None
    for i, f in enumerate(files):
        a = reader(f)
        if out is None:
            out, first = np.empty((len(files), *a.shape), np.float32), f
        elif a.shape != out.shape[1:]:
            if a.shape[:-1] != out.shape[1:-1] or {a.shape[-1], out.shape[-1]} != {1, 3}:
                raise InputError(
                    "image_size",
                    None,
                    f"one shape for all files, or image_size to resize; {first} is {out.shape[1:]}, {f} is {a.shape}",
                )
            if a.shape[-1] == 1:
                a = np.repeat(a, 3, axis=-1)
            else:
                out = np.repeat(out, 3, axis=-1)
        out[i] = a
        bar.update()
    return out


def load_items(
    name: str,
    names: list[str],
    train: list[Item],
    val: list[Item],
    reader: Callable[[Path], np.ndarray],
    params: dict,
    a: LoadArgs,
    source: object,
    augment: str | None = None,
) -> Dataset:
    """Subsample (n_train, n_val), read through the cache, and wrap as a Dataset."""
    rng = np.random.default_rng(a.seed)
    train = [train[i] for i in pick(len(train), a.n_train, rng, "n_train")]
    val = [val[i] for i in pick(len(val), a.n_val, rng, "n_val")]
    files = [f for f, _ in train + val]
    key = cache_key(files, {"dataset": name, "seed": a.seed, **params})

    def build() -> dict[str, np.ndarray]:
        bar = Progress(len(files), f"preparing {name}", a.progress)
        x = read_all(files, reader, bar)
        bar.close()
        y = np.array([label for _, label in train + val], np.int64)
        return {
            "x_train": x[: len(train)],
            "y_train": y[: len(train)],
            "x_val": x[len(train) :],
            "y_val": y[len(train) :],
        }

    arr = load_or_build(cache_root(a.cache_dir), name, key, build)
    return Dataset(
        name,
        arr["x_train"],
        arr["y_train"],
        arr["x_val"],
        arr["y_val"],
        names,
        provenance(source, key, a.seed, params),
        augment,
    )


def load_folder(a: LoadArgs) -> Dataset:
    """Any class-per-folder tree; 80/20 split with the seed unless train/ and val/ exist."""
    require(a.data_dir is not None, "data_dir", None, "a class-per-folder tree for dataset='folder'")
    root = Path(a.data_dir).expanduser()
    names, train, val, split = tree_items(root, 0.2, a.seed)
    size = tuple(a.image_size) if a.image_size else None
    return load_items(
        "folder",
        names,
        train,
        val,
        partial(read_file, size=size),
        {"image_size": size, "split": split},
        a,
        root.resolve(),
    )
