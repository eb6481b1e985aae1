"""ddmlflow.data: user errors name the problem, the cache reads no source twice, downloads unpack."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from datafiles import _cache, cache_files, fake_cifar, nifti, png, tree  # noqa: F401 - _cache is an autouse fixture

import ddmlflow.data as data
from ddmlflow.data import DATASETS, Dataset, load
from ddmlflow.data.cache import Progress
from ddmlflow.errors import InputError

# --- user errors ----------------------------------------------------------------------------------


def test_errors_name_parameter_and_value(tmp_path):
    with pytest.raises(InputError, match="dataset='mnist'") as e:
        load("mnist")
    assert all(name in str(e.value) for name in DATASETS) and "\n" not in str(e.value)
    with pytest.raises(InputError, match="data_dir=.*nowhere.*existing folder"):
        load("folder", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="data_dir"):
        load("folder")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(InputError, match="found none"):
        load("folder", data_dir=str(tmp_path / "empty"))
    with pytest.raises(InputError, match="at least two classes"):
        load("folder", data_dir=str(tree(tmp_path / "one", (3,))))
    with pytest.raises(InputError, match="data_dir"):
        load("shapes2d", data_dir=str(tmp_path))
    with pytest.raises(InputError, match="image_size"):
        load("shapes2d", image_size=(32, 32, 8))
    with pytest.raises(InputError, match="seed"):
        load("shapes2d", seed=-1)
    with pytest.raises(InputError, match="n_val"):
        load("shapes2d", n_val=0)


def test_corrupt_files_are_named(tmp_path):
    tree(tmp_path / "img", (2, 2))
    (tmp_path / "img" / "class1" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(InputError, match="broken.png.*unreadable image"):
        load("folder", data_dir=str(tmp_path / "img"), cache_dir=str(tmp_path / "c"))
    for c in ("CT-0", "CT-23"):
        nifti(tmp_path / "ct" / c / "ok.nii.gz", np.zeros((4, 4, 4), np.int16))
    (tmp_path / "ct" / "CT-23" / "torn.nii.gz").write_bytes(b"\x1f\x8b torn")
    with pytest.raises(InputError, match="torn.nii.gz.*unreadable NIfTI"):
        load("mosmed", data_dir=str(tmp_path / "ct"), cache_dir=str(tmp_path / "c"))


def test_mixed_shapes_need_image_size(tmp_path):
    png(tmp_path / "a" / "0.png", (8, 8))
    png(tmp_path / "a" / "1.png", (8, 8))
    png(tmp_path / "b" / "2.png", (9, 8))
    with pytest.raises(InputError, match="image_size.*2.png"):
        load("folder", data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"))
    assert load("folder", data_dir=str(tmp_path), image_size=(8, 8), cache_dir=str(tmp_path / "c")).input_shape == (
        8,
        8,
        3,
    )


def test_labels_out_of_range(tmp_path):
    tree(tmp_path / "train", (2, 2))
    png(tmp_path / "val" / "class7" / "0.png")
    with pytest.raises(InputError, match="out of range"):
        load("folder", data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"))
    x = np.zeros((2, 4, 4, 1), np.float32)
    with pytest.raises(InputError, match="out of range"):
        Dataset("d", x, np.array([0, 2]), x, np.array([0, 1]), ["a", "b"], {})


# --- cache ---------------------------------------------------------------------------------------


def test_second_load_reads_no_source_file(tmp_path, monkeypatch):
    root, cache = tree(tmp_path / "t", (4, 4)), tmp_path / "c"
    first = load("folder", data_dir=str(root), cache_dir=str(cache))
    assert len([f for f in cache_files(cache) if f.endswith(".npz")]) == 1

    def no_reading(*a, **k):
        raise AssertionError("a source file was read")

    monkeypatch.setattr(data.images.Image, "open", no_reading)
    second = load("folder", data_dir=str(root), cache_dir=str(cache))
    assert second.provenance["cache_key"] == first.provenance["cache_key"]
    assert np.array_equal(first.x_train, second.x_train) and np.array_equal(first.y_val, second.y_val)
    assert second.x_train.dtype == np.float32
    monkeypatch.undo()
    png(root / "class0" / "0.png", seed=99)  # a changed file means a new key
    third = load("folder", data_dir=str(root), cache_dir=str(cache))
    assert third.provenance["cache_key"] != first.provenance["cache_key"]


def test_cached_ct_and_pickles_read_nothing(tmp_path, monkeypatch):
    fake_cifar(tmp_path / "cif")
    for c in ("CT-0", "CT-23"):
        for i in range(2):
            nifti(tmp_path / "ct" / c / f"{i}.nii", np.full((6, 6, 4), -200.0, np.float32))
    kw = dict(cache_dir=str(tmp_path / "c"))
    a, b = (
        load("cifar10", data_dir=str(tmp_path / "cif"), **kw),
        load("mosmed", data_dir=str(tmp_path / "ct"), image_size=(6, 6, 4), **kw),
    )

    def no_reading(*a, **k):
        raise AssertionError("a source file was read")

    monkeypatch.setattr(data.images, "_unpickle", no_reading)
    monkeypatch.setattr(nib, "load", no_reading)
    assert np.array_equal(load("cifar10", data_dir=str(tmp_path / "cif"), **kw).x_train, a.x_train)
    assert np.array_equal(load("mosmed", data_dir=str(tmp_path / "ct"), image_size=(6, 6, 4), **kw).x_val, b.x_val)


def test_failed_preparation_leaves_no_cache_file(tmp_path):
    tree(tmp_path / "t", (3, 3))
    (tmp_path / "t" / "class0" / "z.png").write_bytes(b"not an image")
    cache = tmp_path / "c"
    with pytest.raises(InputError):
        load("folder", data_dir=str(tmp_path / "t"), cache_dir=str(cache))
    assert cache_files(cache) == []


def test_progress_bar_only_when_slow_and_enabled(capsys):
    bar = Progress(10, "preparing x", enabled=True, delay=0.0)
    for _ in range(10):
        bar.update()
    bar.close()
    err = capsys.readouterr().err
    assert "preparing x" in err and "10/10" in err
    quiet = Progress(10, "preparing y", enabled=False, delay=0.0)
    quiet.update(10)
    quiet.close()
    fast = Progress(10, "preparing z", enabled=True, delay=60.0)
    fast.update(10)
    fast.close()
    assert capsys.readouterr().err == ""


# --- downloads (file:// URLs stand in for the real ones) -----------------------------------------


def test_tf_flowers_download_and_extract(tmp_path, monkeypatch):
    import tarfile

    tree(tmp_path / "src" / "flower_photos", (3, 2), suffix=".jpg")
    tgz = tmp_path / "flower_photos.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(tmp_path / "src" / "flower_photos", arcname="flower_photos")
    monkeypatch.setattr(data.papers, "FLOWERS_URL", tgz.as_uri())
    ds = load("tf_flowers", image_size=(16, 16), cache_dir=str(tmp_path / "c"))
    assert ds.class_names == ["class0", "class1"] and len(ds.x_train) + len(ds.x_val) == 5
    assert (tmp_path / "c" / "downloads" / "flower_photos.tgz").is_file()


def test_mosmed_download_and_extract(tmp_path, monkeypatch):
    import zipfile

    for folder in ("CT-0", "CT-23"):
        with zipfile.ZipFile(tmp_path / f"{folder}.zip", "w") as z:
            for i in range(2):
                f = nifti(tmp_path / "src" / folder / f"study_{i}.nii.gz", np.full((6, 6, 4), -1000, np.int16))
                z.write(f, f"{folder}/{f.name}")
        monkeypatch.setitem(data.papers.MOSMED_URLS, folder, (tmp_path / f"{folder}.zip").as_uri())
    ds = load("mosmed", image_size=(6, 6, 4), cache_dir=str(tmp_path / "c"))
    assert len(ds.x_train) + len(ds.x_val) == 4 and ds.x_train.max() == 0  # -1000 HU is 0
    assert sorted(p.name for p in (tmp_path / "c" / "downloads" / "MosMedData").iterdir()) == ["CT-0", "CT-23"]


def test_real_urls_are_the_papers():
    assert (
        data.papers.FLOWERS_URL
        == "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"
    )
    assert data.papers.MOSMED_URLS["CT-23"].endswith(
        "3D-image-classification-tutorial/releases/download/v0.2/CT-23.zip"
    )


def test_interrupted_cache_write_leaves_nothing_and_still_loads(tmp_path, monkeypatch):
    root, cache = tree(tmp_path / "t", (3, 3)), tmp_path / "c"

    def torn_savez(f, **arrays):
        f.write(b"PK half an npz")
        raise OSError("disk full")

    monkeypatch.setattr(data.cache.np, "savez", torn_savez)
    with pytest.warns(UserWarning, match="disk full"):
        ds = load("folder", data_dir=str(root), cache_dir=str(cache))
    assert len(ds.x_train) + len(ds.x_val) == 6
    assert cache_files(cache) == []
