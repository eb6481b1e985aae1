"""ddmlflow.data on the real data in ../shared/data (skipped when that folder is absent)."""

from __future__ import annotations

import tarfile

import nibabel as nib
import numpy as np
import pytest

from conftest import SHARED_DATA
from ddmlflow.data import load, read_input

CIFAR_TGZ = SHARED_DATA / "cifar10-jpeg.tar.gz"
MOSMED = SHARED_DATA / "mosmed-sample"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.mark.slow  # about 25 s: 60,000 JPEG decodes
@pytest.mark.skipif(
    not CIFAR_TGZ.is_file(),
    reason=f"needs CIFAR-10 in {CIFAR_TGZ} (../shared beside the checkout, or set DDMLFLOW_SHARED)",
)
def test_cifar10_jpeg_tree_full(tmp_path):
    with tarfile.open(CIFAR_TGZ) as tar:
        tar.extractall(tmp_path / "cifar", filter="data")
    root = tmp_path / "cifar"
    ds = load("cifar10", data_dir=str(root), cache_dir=str(tmp_path / "cache"), progress=False)
    assert ds.x_train.shape == (50000, 32, 32, 3) and ds.x_val.shape == (10000, 32, 32, 3)
    assert ds.class_names == CIFAR_CLASSES
    assert np.bincount(ds.y_train).tolist() == [5000] * 10
    assert np.bincount(ds.y_val).tolist() == [1000] * 10
    # labels follow the class folders: find one file of every class among the arrays
    flat = ds.x_train.reshape(len(ds.x_train), -1)
    for k, name in enumerate(CIFAR_CLASSES):
        f = sorted((root / "train" / name).iterdir())[7]
        hits = np.flatnonzero((flat == read_input(str(f)).ravel()).all(axis=1))
        assert len(hits) >= 1 and set(ds.y_train[hits].tolist()) == {k}


@pytest.mark.skipif(
    not MOSMED.is_dir(),
    reason=f"needs the MosMed sample in {MOSMED} (../shared beside the checkout, or set DDMLFLOW_SHARED)",
)
@pytest.mark.parametrize("i", range(5))
def test_mosmed_sample_volumes_pass_unchanged(i):
    path = MOSMED / f"volume{i}.nii.gz"
    raw = nib.load(str(path)).get_fdata(dtype=np.float32)
    vol = read_input(str(path), input_shape=(128, 128, 64, 1))
    assert vol.shape == (128, 128, 64, 1) and vol.dtype == np.float32
    assert vol.min() >= 0 and vol.max() <= 1
    np.testing.assert_allclose(vol[..., 0], raw, atol=1e-6)  # not clipped, scaled or rotated again
    assert np.array_equal(read_input(str(path)), vol)  # no input_shape: the same
