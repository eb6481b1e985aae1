"""Files the data tests write: Pillow images, class trees, NIfTI volumes; and a private cache."""

from __future__ import annotations

import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Never touch ~/.cache: the default cache is a temp folder."""
    monkeypatch.setenv("DDMLFLOW_CACHE", str(tmp_path / "default-cache"))


def png(path: Path, size=(12, 10), mode="RGB", seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[0], size[1], 3) if mode == "RGB" else size
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def tree(root: Path, per_class=(5, 5), size=(12, 10), suffix=".png") -> Path:
    for c, n in enumerate(per_class):
        for i in range(n):
            png(root / f"class{c}" / f"{i}{suffix}", size, seed=10 * c + i)
    return root


def nifti(path: Path, vol: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    return path


def cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def fake_cifar(root: Path, n=4, labels=None) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": list(labels if labels is not None else rng.integers(0, 10, n)),
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    return folder
