"""ddmlflow.data on files the tests write: every loader, every user error, the cache."""

from __future__ import annotations

import pickle

import nibabel as nib
import numpy as np
import pytest
from datafiles import _cache, cache_files, fake_cifar, nifti, png, tree  # noqa: F401 - _cache is an autouse fixture
from scipy import ndimage

import ddmlflow.data as data
from ddmlflow.data import Dataset, augment_batch, load, read_input
from ddmlflow.data.generated import (
    BACKGROUND_MAX,
    KINDS,
    NODULES,
    SHAPES2D_CLASSES,
    SHAPES3D_CLASSES,
    shapes3d_labels,
    shapes3d_volumes,
)
from ddmlflow.errors import InputError

# --- shapes2d: the default ---------------------------------------------------------------


def quadrant_kinds(img: np.ndarray) -> dict[int, str]:
    """Non-empty quadrants and the kind of their shape, told by how it fills its bounding box."""
    h, w = img.shape[0] // 2, img.shape[1] // 2
    found = {}
    for q in range(4):
        ink = img[(q // 2) * h : (q // 2 + 1) * h, (q % 2) * w : (q % 2 + 1) * w].max(-1) > 0.5
        if ink.sum() >= 10:
            rows, cols = np.nonzero(ink)
            fill = ink.sum() / ((np.ptp(rows) + 1) * (np.ptp(cols) + 1))
            found[q] = "square" if fill > 0.9 else "circle" if fill > 0.63 else "triangle"
    return found


def test_shapes2d_defaults_balanced_and_generated_in_memory(tmp_path):
    ds = load("shapes2d", cache_dir=str(tmp_path / "c"))
    assert cache_files(tmp_path / "c") == []  # generated on the fly (seeded), nothing to cache or read back
    assert isinstance(ds, Dataset) and ds.name == "shapes2d"
    assert ds.x_train.shape == (1500, 32, 32, 3) and ds.x_val.shape == (500, 32, 32, 3)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    assert ds.input_shape == (32, 32, 3) and ds.num_classes == 6 and ds.spatial_ndim == 2
    assert ds.class_names == SHAPES2D_CLASSES and len(set(ds.class_names)) == 6
    assert ds.augment is None and ds.provenance["seed"] == 0
    for y in (ds.y_train, ds.y_val):
        per_class = np.bincount(y, minlength=6)
        assert per_class.max() - per_class.min() <= 1
    assert ds.provenance["counts"]["train_per_class"] == [250] * 6


def test_shapes2d_deterministic_by_seed_and_overridable():
    a, b, c = (
        load("shapes2d", seed=3, n_train=60, n_val=30),
        load("shapes2d", seed=3, n_train=60, n_val=30),
        load("shapes2d", seed=4, n_train=60, n_val=30),
    )
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_val, b.y_val)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.x_train.shape == (60, 32, 32, 3) and a.x_val.shape == (30, 32, 32, 3)
    big = load("shapes2d", n_train=12, n_val=6, image_size=(48, 40))
    assert big.input_shape == (48, 40, 3)
    # the validation set does not depend on n_train
    assert np.array_equal(load("shapes2d", seed=3, n_train=6, n_val=30).x_val, a.x_val)


@pytest.mark.parametrize("size", [(32, 32), (64, 64)])
def test_shapes2d_two_shapes_in_two_quadrants_match_the_label(size):
    ds = load("shapes2d", n_train=300, n_val=6, image_size=size)
    for img, y in zip(ds.x_train, ds.y_train):
        found = quadrant_kinds(img)
        assert len(found) == 2  # exactly two quadrants hold a shape, the other two are empty
        assert "+".join(sorted(found.values(), key=KINDS.index)) == ds.class_names[y]
    # empty quadrants are pure background
    for img in ds.x_train[:50]:
        h = img.shape[0] // 2
        quads = [img[:h, :h], img[:h, h:], img[h:, :h], img[h:, h:]]
        assert sum(q.max() <= BACKGROUND_MAX for q in quads) == 2


def structure_kinds(vol):
    """{quadrant column: kind} of a shapes3d HU volume, read off the bright voxels' bounding box."""
    h, w = vol.shape[0] // 2, vol.shape[1] // 2
    found = {}
    for q in range(4):
        m = vol[(q // 2) * h : (q // 2 + 1) * h, (q % 2) * w : (q % 2 + 1) * w] > -450
        if m.any():
            ext = [np.ptp(np.nonzero(m)[a]) + 1 for a in range(3)]
            fill = m.sum() / np.prod(ext)
            found[q] = "rod" if ext[2] > 1.4 * max(ext[:2]) else "cube" if fill > 0.8 else "ball"
    return found


def test_shapes3d_two_structures_in_two_quadrant_columns_match_the_label():
    y = shapes3d_labels(120, 0, "train")
    vols = shapes3d_volumes(y, np.random.default_rng(0))
    assert np.bincount(y).tolist() == [20] * 6
    for vol, label in zip(vols, y):
        found = structure_kinds(vol)
        assert len(found) == 2  # exactly two columns hold a structure: no single box decides the pair
        assert "+".join(sorted(found.values(), key=NODULES.index)) == SHAPES3D_CLASSES[label]


# --- shapes3d: NIfTI round trip ------------------------------------------------------------


def test_shapes3d_writes_nifti_in_hu_and_reads_it_through_the_ct_path(tmp_path, monkeypatch):
    cache = tmp_path / "c"
    ds = load("shapes3d", cache_dir=str(cache), n_train=8, n_val=4, progress=False)
    assert ds.x_train.shape == (8, 32, 32, 16, 1) and ds.x_val.shape == (4, 32, 32, 16, 1)
    assert ds.class_names == SHAPES3D_CLASSES and ds.spatial_ndim == 3 and ds.augment == "rotate3d"
    files = sorted(cache.rglob("*.nii.gz"))
    assert len(files) == 12 and {f.parent.name for f in files} <= set(SHAPES3D_CLASSES)
    hu = nib.load(str(files[0])).get_fdata()
    assert hu.min() < -900 and hu.max() > -150  # raw Hounsfield units: lung-like tissue, dense structures
    # every sample is exactly what the MosMed reader makes of one of the files, label from its folder
    made = {f: data.ct.read_volume(f, (32, 32, 16)) for f in files}
    for x, y in zip(np.concatenate([ds.x_train, ds.x_val]), np.concatenate([ds.y_train, ds.y_val])):
        match = [f for f, v in made.items() if np.array_equal(v, x)]
        assert len(match) == 1 and match[0].parent.name == SHAPES3D_CLASSES[y]
    # the second load reads the prepared cache: no volume is generated, no NIfTI file is read
    monkeypatch.setattr(data.generated, "shapes3d_volumes", no_call)
    monkeypatch.setattr(nib, "load", no_call)
    cached = load("shapes3d", cache_dir=str(cache), n_train=8, n_val=4, progress=False)
    assert np.array_equal(cached.x_train, ds.x_train) and np.array_equal(cached.y_val, ds.y_val)
    monkeypatch.undo()
    again = load("shapes3d", cache_dir=str(cache), n_train=8, n_val=4, image_size=(16, 16, 8))
    assert again.input_shape == (16, 16, 8, 1)


def no_call(*args, **kwargs):
    raise AssertionError("the cache was not used")


# --- mosmed: the keras-io preprocessing ---------------------------------------------------------


def test_ct_preprocessing_clips_scales_rotates_and_resizes(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.uniform(-2000, 3000, (20, 20, 10)).astype(np.float32)
    raw[0, 0, :], raw[0, 1, :], raw[0, 2, :] = -1024, 2000, -300  # below, above, inside the window
    got = read_input(str(nifti(tmp_path / "scan.nii.gz", raw)))
    expect = ndimage.rotate((np.clip(raw, -1000, 400) + 1000) / 1400, 90, reshape=False)
    assert got.shape == (20, 20, 10, 1) and got.dtype == np.float32
    np.testing.assert_allclose(got[..., 0], np.clip(expect, 0, 1), atol=1e-5)
    unrotated = np.rot90(got[..., 0], k=-1, axes=(0, 1))  # 90 degrees on a square grid is exact
    assert unrotated[0, 0, 0] == pytest.approx(0) and unrotated[0, 1, 0] == pytest.approx(1)
    assert unrotated[0, 2, 0] == pytest.approx(0.5, abs=1e-6)
    resized = read_input(str(tmp_path / "scan.nii.gz"), input_shape=(8, 8, 4, 1))
    assert resized.shape == (8, 8, 4, 1) and 0 <= resized.min() and resized.max() <= 1


def test_ct_preprocessed_volume_is_left_alone(tmp_path):
    vol = np.random.default_rng(1).uniform(0, 1, (16, 12, 8)).astype(np.float32)  # not square: rotation would show
    got = read_input(str(nifti(tmp_path / "v.nii", vol)), input_shape=(16, 12, 8, 1))
    np.testing.assert_array_equal(got[..., 0], vol)
    assert read_input(str(tmp_path / "v.nii"), input_shape=(8, 6, 4, 1)).shape == (8, 6, 4, 1)


def test_mosmed_loads_ct0_ct23_with_split_and_augment(tmp_path):
    rng = np.random.default_rng(0)
    for folder, n in (("CT-0", 6), ("CT-23", 4)):
        for i in range(n):
            nifti(
                tmp_path / "MosMedData" / folder / f"study_{i}.nii.gz",
                rng.uniform(-1024, 2000, (16, 16, 8)).astype(np.int16),
            )
    ds = load("mosmed", data_dir=str(tmp_path), image_size=(8, 8, 4), cache_dir=str(tmp_path / "c"))
    assert (len(ds.x_train), len(ds.x_val)) == (7, 3)  # 70/30 as 140/60
    assert ds.input_shape == (8, 8, 4, 1) and ds.class_names == ["normal", "abnormal"]
    assert ds.augment == "rotate3d" and sum(ds.provenance["counts"]["train_per_class"]) == 7
    assert np.bincount(np.concatenate([ds.y_train, ds.y_val])).tolist() == [6, 4]
    other = load("mosmed", data_dir=str(tmp_path), image_size=(8, 8, 4), seed=1, cache_dir=str(tmp_path / "c"))
    assert not np.array_equal(np.sort(ds.x_val.ravel()), np.sort(other.x_val.ravel()))


def test_augment_rotate3d_and_identity():
    x = np.zeros((2, 16, 16, 4, 1), np.float32)
    x[:, 2:6, 6:10] = 1.0  # an off-centre block: any rotation moves it

    def rngs(*keys):
        return [np.random.default_rng(k) for k in keys]

    assert augment_batch(None, x, rngs(0, 1)) is x
    a = augment_batch("rotate3d", x, rngs(0, 1))
    b = augment_batch("rotate3d", x, rngs(0, 1))
    assert a.shape == x.shape and np.array_equal(a, b) and not np.allclose(a, x)
    np.testing.assert_array_equal(augment_batch("rotate3d", x[1:], rngs(1))[0], a[1])  # one draw per sample
    assert 0 <= a.min() and a.max() <= 1
    np.testing.assert_allclose(a[:, :, :, 0], a[:, :, :, 3])  # rotation in the H-W plane only
    with pytest.raises(InputError, match="augment"):
        augment_batch("flip", x, rngs(0, 1))


# --- cifar10 -----------------------------------------------------------------------------------


def test_cifar10_pickled_batches(tmp_path):
    folder = fake_cifar(tmp_path)
    ds = load("cifar10", data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"))  # the parent works too
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_val.shape == (4, 32, 32, 3)
    assert ds.class_names[0] == "airplane" and ds.num_classes == 10
    test = pickle.loads((folder / "test_batch").read_bytes())
    planes = test[b"data"].reshape(-1, 3, 32, 32)
    for x, y in zip(ds.x_val, ds.y_val):  # shuffled, so find each image by its red plane
        i = [k for k in range(4) if np.array_equal(np.round(x[..., 0] * 255), planes[k, 0])][0]
        np.testing.assert_array_equal(np.round(x * 255).astype(np.uint8), planes[i].transpose(1, 2, 0))
        assert y == test[b"labels"][i]
    sub = load("cifar10", data_dir=str(folder), n_train=5, n_val=2, cache_dir=str(tmp_path / "c"))
    assert (len(sub.x_train), len(sub.x_val)) == (5, 2)
    with pytest.raises(InputError, match="n_train"):
        load("cifar10", data_dir=str(folder), n_train=21, cache_dir=str(tmp_path / "c"))


def test_cifar10_labels_out_of_range(tmp_path):
    fake_cifar(tmp_path, labels=[0, 3, 12, 1])
    with pytest.raises(InputError, match="out of range"):
        load("cifar10", data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"))


def test_cifar10_image_tree_with_train_and_test(tmp_path):
    for part, n in (("train", 3), ("test", 2)):
        for c in ("cat", "dog"):
            for i in range(n):
                png(tmp_path / part / c / f"{i}.jpg", (32, 32), seed=i)
    ds = load("cifar10", data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"))
    assert ds.class_names == ["cat", "dog"] and (len(ds.x_train), len(ds.x_val)) == (6, 4)
    assert ds.input_shape == (32, 32, 3) and np.bincount(ds.y_val).tolist() == [2, 2]


def test_cifar10_offline_download_names_data_dir(monkeypatch):
    def offline():  # what keras.datasets.cifar10.load_data raises offline
        raise Exception("URL fetch failure on https://www.cs.toronto.edu/...: None -- no network")

    monkeypatch.setattr(data.papers, "keras_cifar10", offline)
    with pytest.raises(InputError, match="data_dir"):
        load("cifar10")


# --- tf_flowers, yale_b, folder ---------------------------------------------------------


def test_tf_flowers_resized_to_180_and_split_80_20(tmp_path, monkeypatch):
    root = tmp_path / "flower_photos"
    for c in ("daisy", "roses"):
        for i in range(5):
            png(root / c / f"{i}.jpg", (20 + i, 30), seed=i)  # JPEGs of different sizes
    ds = load("tf_flowers", data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"))
    assert ds.input_shape == (180, 180, 3) and (len(ds.x_train), len(ds.x_val)) == (8, 2)
    assert ds.class_names == ["daisy", "roses"]

    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(data.papers, "download", offline)
    with pytest.raises(InputError, match="data_dir"):
        load("tf_flowers", cache_dir=str(tmp_path / "c"))


def test_yale_b_pgm_tree_skips_ambient_and_bad(tmp_path):
    root = tmp_path / "CroppedYale"
    for p in range(3):
        for i in range(4):
            png(root / f"yaleB{p + 1:02d}" / f"yaleB{p + 1:02d}_P00A+0{i}0E+00.pgm", (24, 21), "L", seed=i)
        (root / f"yaleB{p + 1:02d}" / f"yaleB{p + 1:02d}_P00_Ambient.pgm").write_bytes(b"garbage")
        png(root / f"yaleB{p + 1:02d}" / "x.pgm", (24, 21), "L").rename(root / f"yaleB{p + 1:02d}" / "x.pgm.bad")
    ds = load("yale_b", data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"))
    assert ds.num_classes == 3 and ds.class_names[0] == "yaleB01"
    assert (len(ds.x_train), len(ds.x_val)) == (8, 4)  # 12 kept files, 70/30 as 1687/723
    assert ds.input_shape == (24, 21, 1)
    with pytest.raises(InputError, match="data_dir"):
        load("yale_b")


def test_folder_random_split_and_explicit_split(tmp_path):
    ds = load("folder", data_dir=str(tree(tmp_path / "a", (6, 4))), cache_dir=str(tmp_path / "c"))
    assert (len(ds.x_train), len(ds.x_val)) == (8, 2) and ds.class_names == ["class0", "class1"]
    again = load("folder", data_dir=str(tmp_path / "a"), cache_dir=str(tmp_path / "c"))
    assert np.array_equal(ds.x_val, again.x_val)
    other = load("folder", data_dir=str(tmp_path / "a"), seed=5, cache_dir=str(tmp_path / "c"))
    assert not np.array_equal(np.sort(ds.x_val.ravel()), np.sort(other.x_val.ravel()))
    tree(tmp_path / "b" / "train", (3, 3))
    tree(tmp_path / "b" / "val", (1, 2))
    ds = load("folder", data_dir=str(tmp_path / "b"), image_size=(8, 8), cache_dir=str(tmp_path / "c"))
    assert (len(ds.x_train), len(ds.x_val)) == (6, 3) and ds.input_shape == (8, 8, 3)
    assert np.bincount(ds.y_val).tolist() == [1, 2] and ds.provenance["cache_key"]


def test_folder_grey_and_rgb_mix_and_nifti_volumes(tmp_path):
    png(tmp_path / "m" / "a" / "0.png", (8, 8), "L")
    png(tmp_path / "m" / "a" / "1.png", (8, 8))
    png(tmp_path / "m" / "b" / "2.png", (8, 8), "L")
    ds = load("folder", data_dir=str(tmp_path / "m"), cache_dir=str(tmp_path / "c"))
    assert ds.input_shape == (8, 8, 3)
    for c in ("x", "y"):
        for i in range(3):
            nifti(tmp_path / "v" / c / f"{i}.nii.gz", np.full((6, 6, 4), -500.0 if c == "x" else 300.0, np.float32))
    vol = load("folder", data_dir=str(tmp_path / "v"), cache_dir=str(tmp_path / "c"))
    assert vol.input_shape == (6, 6, 4, 1) and vol.spatial_ndim == 3
    for x, y in zip(vol.x_train, vol.y_train):
        assert x.mean() == pytest.approx(500 / 1400 if y == 0 else 1300 / 1400, abs=1e-5)


# --- read_input ---------------------------------------------------------------------------------


def test_read_input_images_npy_and_errors(tmp_path):
    rgb = read_input(str(png(tmp_path / "a.png", (12, 10))))
    assert rgb.shape == (12, 10, 3) and rgb.dtype == np.float32 and rgb.max() <= 1
    assert read_input(str(tmp_path / "a.png"), input_shape=(6, 5, 3)).shape == (6, 5, 3)
    grey = png(tmp_path / "g.pgm", (12, 10), "L")
    assert read_input(str(grey)).shape == (12, 10, 1)
    g3 = read_input(str(grey), input_shape=(12, 10, 3))
    assert g3.shape == (12, 10, 3) and np.array_equal(g3[..., 0], g3[..., 2])
    arr = np.random.default_rng(0).random((4, 4, 2)).astype(np.float64)
    np.save(tmp_path / "x.npy", arr)
    got = read_input(str(tmp_path / "x.npy"))
    assert got.dtype == np.float32 and np.allclose(got, arr)
    with pytest.raises(InputError, match="x.npy"):
        read_input(str(tmp_path / "x.npy"), input_shape=(5, 5, 2))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(InputError, match="bad.jpg"):
        read_input(str(tmp_path / "bad.jpg"))
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(InputError, match="t.txt"):
        read_input(str(tmp_path / "t.txt"))
    with pytest.raises(InputError, match="missing.png"):
        read_input(str(tmp_path / "missing.png"))
