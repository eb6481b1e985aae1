"""Generated, seeded, offline data sets: the embedded default and its 3D twin.

shapes2d is built so the two-level method has something to show. Every image
holds two shapes (circle, square, triangle) in two different quadrants on a
textured background; the other two quadrants are empty, like the sky-only
sub-images of KLW Fig. 8. The class is the unordered pair of kinds (6 classes).
A local net that sees one quadrant learns at best "circle, so circle+circle,
circle+square or circle+triangle", an empty quadrant tells it nothing; so
averaging the local probabilities ties between pairs and majority vote is
swayed by the empty quadrants, while the coarse net can combine what the
locals saw. A global CNN learns the pairs directly. Measured (seed 0, VGG3, 5
epochs, 2x2 half-width locals, Adam 1e-3): global 0.99, each local 0.32-0.33
(the best possible is 1/3), average probability 0.68, majority vote 0.45,
coarse net on the local probabilities 1.00.

shapes3d is a binary CT-like task written as real NIfTI files in Hounsfield
units and read back through exactly the MosMed path, so the whole 3D pipeline
runs offline.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

from ..errors import require
from .cache import VERSION, cache_root
from .ct import read_volume
from .dataset import Dataset, LoadArgs, provenance
from .tree import load_items

KINDS = ("circle", "square", "triangle")
PAIRS = [(i, j) for i in range(len(KINDS)) for j in range(i, len(KINDS))]
SHAPES2D_CLASSES = [f"{KINDS[i]}+{KINDS[j]}" for i, j in PAIRS]
SHAPES3D_CLASSES = ["normal", "abnormal"]
BACKGROUND_MAX = 0.2  # every shape pixel is brighter than this (max over channels >= ~0.8)
SHAPES3D_RAW = (40, 40, 20)  # the NIfTI files; resized to image_size on reading, as MosMed


def shape_masks(kinds: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(m, h, w) masks of one shape each, filling most of an h x w quadrant, jittered."""
    m, s = len(kinds), min(h, w) / 16  # sizes are designed on a 16x16 quadrant
    cy = (h / 2 + rng.uniform(-1.2, 1.2, m) * s)[:, None, None]
    cx = (w / 2 + rng.uniform(-1.2, 1.2, m) * s)[:, None, None]
    r = (rng.uniform(5.0, 6.5, m) * s)[:, None, None]
    dy = np.arange(h)[None, :, None] + 0.5 - cy
    dx = np.arange(w)[None, None, :] + 0.5 - cx
    circle = dx**2 + dy**2 <= r**2
    square = (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    triangle = (np.abs(dy) <= r) & (np.abs(dx) <= (dy + r) / 2)  # apex up, base 2r
    k = kinds[:, None, None]
    return np.where(k == 0, circle, np.where(k == 1, square, triangle))


def _lerp(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear interpolation matrix: smooth upsampling of a coarse texture."""
    pos = np.linspace(0, n_in - 1, n_out)
    i0 = np.minimum(pos.astype(int), n_in - 2)
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), i0], m[np.arange(n_out), i0 + 1] = 1 - (pos - i0), pos - i0
    return m


def shapes2d_arrays(n: int, size: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, H, W, 3) in [0, 1] and their pair labels, classes balanced to +-1."""
    h, w = size
    qh, qw = h // 2, w // 2
    y = rng.permutation(np.arange(n) % len(PAIRS))
    kinds = np.array(PAIRS)[y]
    swap = rng.random(n) < 0.5
    kinds[swap] = kinds[swap, ::-1]
    quadrant = np.argsort(rng.random((n, 4)), axis=1)[:, :2]  # two different quadrants
    masks = shape_masks(kinds.ravel(), qh, qw, rng).reshape(n, 2, qh, qw)
    colour = rng.uniform(0.1, 1.0, (n, 2, 3))
    colour *= rng.uniform(0.85, 1.0, (n, 2, 1)) / colour.max(-1, keepdims=True)  # bright, any hue
    coarse = rng.random((n, 3, 5, 5))
    texture = (_lerp(5, h) @ coarse @ _lerp(5, w).T).transpose(0, 2, 3, 1)
    x = rng.uniform(0.0, 0.08, (n, 1, 1, 1)) + 0.06 * texture + rng.normal(0, 0.02, (n, h, w, 3))
    # A dark background: with a brighter one (up to 0.45) plain VGG3 sometimes sat on
    # the ln(6) plateau for all 5 epochs; at <= 0.2 it leaves it in 1-3 epochs.
    x = np.clip(x, 0, BACKGROUND_MAX)
    for q in range(4):
        r0, c0 = (q // 2) * qh, (q % 2) * qw
        for s in range(2):
            sel = quadrant[:, s] == q
            ink = colour[sel, s][:, None, None, :] + rng.normal(0, 0.02, (int(sel.sum()), qh, qw, 3))
            region = x[sel, r0:r0 + qh, c0:c0 + qw]
            x[sel, r0:r0 + qh, c0:c0 + qw] = np.where(masks[sel, s][..., None], ink, region)
    return np.clip(x, 0, 1).astype(np.float32), y.astype(np.int64)


def shapes2d(a: LoadArgs) -> Dataset:
    """The default data set: 32x32x3, 1500 train / 500 val, 6 classes, < 1 s."""
    size = a.size(2, (32, 32))
    require(min(size) >= 8, "image_size", size, "at least 8x8 (four quadrants with a shape each)")
    n_train, n_val = a.n_train or 1500, a.n_val or 500
    x_tr, y_tr = shapes2d_arrays(n_train, size, np.random.default_rng([a.seed, 0]))
    x_va, y_va = shapes2d_arrays(n_val, size, np.random.default_rng([a.seed, 1]))
    params = {"image_size": size, "n_train": n_train, "n_val": n_val}
    return Dataset("shapes2d", x_tr, y_tr, x_va, y_va, SHAPES2D_CLASSES,
                   provenance("generated (ddmlflow.data.generated.shapes2d)", None, a.seed, params))


def ct_volume(abnormal: bool, rng: np.random.Generator,
              shape: tuple[int, int, int] = SHAPES3D_RAW) -> np.ndarray:
    """A chest-like volume in HU: air, body, two lungs, a spine; 1-2 lesions if abnormal."""
    h, w, d = shape
    i, j, k = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, np.arange(d) + 0.5, indexing="ij")
    y, x, z = 2 * i / h - 1, 2 * j / w - 1, 2 * k / d - 1  # [-1, 1] in every axis
    ay, ax = rng.uniform(0.6, 0.75), rng.uniform(0.8, 0.92)
    vol = np.full(shape, -1024.0)
    vol[(x / ax) ** 2 + (y / ay) ** 2 <= 1] = 40.0  # soft tissue
    lungs = []
    for side in (-1, 1):
        c = np.array([rng.uniform(-0.1, 0.05), side * rng.uniform(0.35, 0.42), 0.0])
        rad = np.array([ay * rng.uniform(0.55, 0.7), rng.uniform(0.25, 0.3), rng.uniform(0.8, 0.95)])
        inside = ((y - c[0]) / rad[0]) ** 2 + ((x - c[1]) / rad[1]) ** 2 + ((z - c[2]) / rad[2]) ** 2 <= 1
        vol[inside] = -860.0
        lungs.append((c, rad))
    vol[(x / 0.1) ** 2 + ((y - 0.8 * ay) / 0.1) ** 2 <= 1] = rng.uniform(1200, 2000)  # bone, clipped later
    if abnormal:
        for _ in range(rng.integers(1, 3)):
            c, rad = lungs[rng.integers(2)]
            centre = (c + rng.uniform(-0.45, 0.45, 3) * rad + 1) / 2 * np.array(shape)  # in voxels
            r = rng.uniform(0.07, 0.1) * h
            ball = (i - centre[0]) ** 2 + (j - centre[1]) ** 2 + (k - centre[2]) ** 2 <= r**2
            vol[ball] = rng.uniform(-200, 50)  # ground glass to consolidation
    vol += rng.normal(0, 25, shape)
    return np.clip(vol, -1024, 3071).astype(np.int16)


def write_shapes3d(root: Path, seed: int, n_train: int, n_val: int) -> dict[str, list[tuple[Path, int]]]:
    """Write the NIfTI files once (temp folder, then rename); return train/val (file, label)."""
    import nibabel as nib

    folders = ("CT-0", "CT-23")  # MosMed's folder names: normal, abnormal
    items: dict[str, list[tuple[Path, int]]] = {}
    for part, n in (("train", n_train), ("val", n_val)):
        labels = np.random.default_rng([seed, 2 if part == "train" else 3]).permutation(np.arange(n) % 2)
        items[part] = [(root / folders[lab] / f"{part}_{i:04d}.nii.gz", int(lab))
                       for i, lab in enumerate(labels)]
    if root.is_dir():
        return items
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}-"))
    try:
        for f in folders:
            (tmp / f).mkdir()
        for part in ("train", "val"):
            rng = np.random.default_rng([seed, 4 if part == "train" else 5])
            for path, lab in items[part]:
                img = nib.Nifti1Image(ct_volume(bool(lab), rng), np.eye(4))
                nib.save(img, str(tmp / path.relative_to(root)))
        os.replace(tmp, root)
    except OSError:
        if not root.is_dir():  # a concurrent writer that won the race is fine
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return items


def shapes3d(a: LoadArgs) -> Dataset:
    """Binary CT-like volumes, 32x32x16x1, 64 train / 32 val, via NIfTI and the MosMed path."""
    size = a.size(3, (32, 32, 16))
    n_train, n_val = a.n_train or 64, a.n_val or 32
    spec = {"seed": a.seed, "n_train": n_train, "n_val": n_val, "raw": SHAPES3D_RAW, "v": VERSION}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]
    root = cache_root(a.cache_dir) / "shapes3d-nifti" / key
    items = write_shapes3d(root, a.seed, n_train, n_val)
    return load_items("shapes3d", SHAPES3D_CLASSES, items["train"], items["val"],
                      partial(read_volume, size=size),
                      {"image_size": size, "n_train": n_train, "n_val": n_val, "hu_clip": [-1000, 400]},
                      replace(a, n_train=None, n_val=None), root, augment="rotate3d")
