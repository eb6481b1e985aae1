"""The real data sets of KLW sections 4.1-4.4, from a local folder or downloaded when online.

    cifar10     50,000 / 10,000, 32x32x3, 10 classes (4.1)
    tf_flowers  2,936 / 734 of 3,670, resized to 180x180x3, 5 classes (4.2)
    yale_b      1,687 / 723 of 2,410, 192x168x1, 38 people (4.3)
    mosmed      140 / 60 of 200 CT scans, 128x128x64x1, normal vs abnormal (4.4)

Split fractions (not counts) are kept, so a smaller tree is split alike.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np

from ..errors import InputError, require
from .cache import cache_key, cache_root, download, extract, load_or_build
from .ct import MOSMED_SIZE, read_volume
from .dataset import Dataset, LoadArgs, pick, provenance
from .images import CIFAR10_CLASSES, cifar_batch_files, cifar_class_names, read_cifar_batches, read_image
from .tree import load_items, tree_items

FLOWERS_URL = "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"
MOSMED_URLS = {  # the links of keras-io's "3D image classification from CT scans"
    "CT-0": "https://github.com/hasibzunair/3D-image-classification-tutorial/releases/download/v0.2/CT-0.zip",
    "CT-23": "https://github.com/hasibzunair/3D-image-classification-tutorial/releases/download/v0.2/CT-23.zip",
}


def _offline(name: str, err: Exception, need: str) -> InputError:
    return InputError(
        "data_dir", None, f"downloading {name} failed ({type(err).__name__}: {err}); pass data_dir= {need}"
    )


def _root(a: LoadArgs, inner: str | None = None) -> Path:
    """``data_dir``, or its sub-folder ``inner`` when the user pointed at the folder above it."""
    root = Path(a.data_dir).expanduser()
    require(root.is_dir(), "data_dir", str(root), "an existing folder")
    return root / inner if inner and (root / inner).is_dir() else root


def _from_arrays(
    name: str, x_tr, y_tr, x_va, y_va, names: list[str], a: LoadArgs, source: object, key: str | None, params: dict
) -> Dataset:
    """Subsample (n_train, n_val) in a seeded order and check the labels."""
    for y, f in ((y_tr, "train"), (y_va, "val")):
        bad = y[(y < 0) | (y >= len(names))]
        require(
            bad.size == 0,
            "data_dir",
            str(source),
            f"{f} labels in 0..{len(names) - 1}; labels out of range: {sorted(set(bad.tolist()))[:5]}",
        )
    rng = np.random.default_rng(a.seed)
    i, j = pick(len(x_tr), a.n_train, rng, "n_train"), pick(len(x_va), a.n_val, rng, "n_val")
    return Dataset(name, x_tr[i], y_tr[i], x_va[j], y_va[j], names, provenance(source, key, a.seed, params))


def keras_cifar10():
    """keras.datasets.cifar10.load_data(): downloads once to ~/.keras/datasets."""
    from keras.datasets import cifar10 as keras_data  # TensorFlow loads only when this runs

    return keras_data.load_data()


def cifar10(a: LoadArgs) -> Dataset:
    """Keras' download, a `cifar-10-batches-py` folder, or a train/ + test/ image tree."""
    size = a.size(2, None)
    if a.data_dir is None:
        require(size is None or tuple(size) == (32, 32), "image_size", size, "(32, 32) or a data_dir")
        try:
            (x_tr, y_tr), (x_va, y_va) = keras_cifar10()
        except Exception as e:  # noqa: BLE001 - offline: Keras' download fails in many ways
            raise _offline("CIFAR-10", e, "a cifar-10-batches-py folder or a train/ test/ image tree") from None
        x_tr, x_va = x_tr.astype(np.float32) / 255, x_va.astype(np.float32) / 255
        y_tr, y_va = y_tr.ravel().astype(np.int64), y_va.ravel().astype(np.int64)
        return _from_arrays(
            "cifar10", x_tr, y_tr, x_va, y_va, list(CIFAR10_CLASSES), a, "keras.datasets.cifar10", None, {}
        )
    root = _root(a)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    if (root / "data_batch_1").is_file():
        require(size is None or tuple(size) == (32, 32), "image_size", size, "(32, 32) for the pickled batches")
        batches, test = cifar_batch_files(root)
        key = cache_key(batches + [test], {"dataset": "cifar10", "format": "pickle"})

        def build() -> dict[str, np.ndarray]:
            (x_tr, y_tr), (x_va, y_va) = read_cifar_batches(batches), read_cifar_batches([test])
            return {
                "x_train": x_tr,
                "y_train": y_tr,
                "x_val": x_va,
                "y_val": y_va,
                "class_names": np.array(cifar_class_names(root)),
            }

        arr = load_or_build(cache_root(a.cache_dir), "cifar10", key, build)
        return _from_arrays(
            "cifar10",
            arr["x_train"],
            arr["y_train"],
            arr["x_val"],
            arr["y_val"],
            arr["class_names"].tolist(),
            a,
            root.resolve(),
            key,
            {"format": "pickle"},
        )
    names, train, val, split = tree_items(root, 1 / 6, a.seed)  # 50,000 / 10,000 if not split
    return load_items(
        "cifar10",
        names,
        train,
        val,
        partial(read_image, size=size, channels=3),
        {"image_size": size, "split": split},
        a,
        root.resolve(),
    )


def tf_flowers(a: LoadArgs) -> Dataset:
    """flower_photos/<class>/*.jpg resized to 180x180, split 80/20 (2,936 / 734)."""
    size = a.size(2, (180, 180))
    if a.data_dir is None:
        downloads = cache_root(a.cache_dir) / "downloads"
        try:
            root = (
                extract(download(FLOWERS_URL, downloads / "flower_photos.tgz", a.progress), downloads / "flower_photos")
                / "flower_photos"
            )
        except (OSError, ValueError) as e:
            raise _offline("TF-Flowers", e, "a flower_photos folder (one sub-folder per class)") from None
    else:
        root = _root(a, "flower_photos")
    names, train, val, split = tree_items(root, 734 / 3670, a.seed)
    return load_items(
        "tf_flowers",
        names,
        train,
        val,
        partial(read_image, size=size, channels=3),
        {"image_size": size, "split": split},
        a,
        root.resolve(),
    )


def _yale_skip(f: Path) -> bool:
    return "Ambient" in f.name or f.name.endswith(".bad")


def yale_b(a: LoadArgs) -> Dataset:
    """CroppedYale/yaleBNN/*.pgm (no Ambient, no .bad), 192x168 grey, split 70/30 (1,687 / 723)."""
    require(
        a.data_dir is not None,
        "data_dir",
        None,
        "the CroppedYale folder of the Extended Yale Face Database B (no download exists)",
    )
    size = a.size(2, None)
    root = _root(a, "CroppedYale")
    names, train, val, split = tree_items(root, 723 / 2410, a.seed, skip=_yale_skip)
    return load_items(
        "yale_b",
        names,
        train,
        val,
        partial(read_image, size=size, channels=1),
        {"image_size": size, "split": split, "skip": "Ambient, .bad"},
        a,
        root.resolve(),
    )


def mosmed(a: LoadArgs) -> Dataset:
    """CT-0/ (normal) and CT-23/ (abnormal) NIfTI scans, keras-io preprocessing, split 70/30."""
    size = a.size(3, MOSMED_SIZE)
    if a.data_dir is None:
        downloads = cache_root(a.cache_dir) / "downloads"
        root = downloads / "MosMedData"
        try:
            for sub, url in MOSMED_URLS.items():  # each zip holds one folder, CT-0/ or CT-23/
                if not (root / sub).is_dir():
                    zipped = download(url, downloads / f"{sub}.zip", a.progress)
                    unzipped = extract(zipped, downloads / f"{sub}-zip")
                    root.mkdir(parents=True, exist_ok=True)
                    os.replace(unzipped / sub if (unzipped / sub).is_dir() else unzipped, root / sub)
        except (OSError, ValueError) as e:
            raise _offline("MosMedData", e, "a folder with CT-0/ and CT-23/ NIfTI scans") from None
    else:
        root = _root(a, "MosMedData")
    folders = {"CT-0": "normal", "CT-23": "abnormal"}
    names, train, val, split = tree_items(root, 60 / 200, a.seed, folders=folders)
    return load_items(
        "mosmed",
        names,
        train,
        val,
        partial(read_volume, size=size),
        {"image_size": size, "split": split, "hu_clip": [-1000, 400], "rotate": 90, "zoom_order": 1},
        a,
        root.resolve(),
        augment="rotate3d",
    )
