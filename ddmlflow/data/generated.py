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

shapes3d is its 3D twin, CT-like: lung-like tissue (about -850 HU) holding two
dense structures (ball, cube, or rod along the depth axis) in two of the four
quadrant columns of the axial plane, full depth; the class is the unordered
pair (6 classes). With the default 2x2x1 decomposition each local sees one
column, so, as in 2D, no single box decides the class: a box with a ball only
says "ball+something", an empty one nothing. The volumes are written as real
NIfTI files in Hounsfield units and read back through exactly the MosMed path
(clip, scale, 90 degree rotation, resize), so the whole 3D pipeline runs
offline; training rotates whole volumes (the keras-io CT augmentation), which
moves a structure by up to about 4 voxels (at 20 degrees), at most a sliver
into a neighbouring column.
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
NODULES = ("ball", "cube", "rod")  # shapes3d's structures, as KINDS for shapes2d
SHAPES3D_CLASSES = [f"{NODULES[i]}+{NODULES[j]}" for i, j in PAIRS]
BACKGROUND_MAX = 0.2  # every shape pixel is brighter than this (max over channels >= ~0.8)
SHAPES3D_DESIGN = "pairs-1"  # changes the cache key when the generator changes
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
            region = x[sel, r0 : r0 + qh, c0 : c0 + qw]
            x[sel, r0 : r0 + qh, c0 : c0 + qw] = np.where(masks[sel, s][..., None], ink, region)
    return np.clip(x, 0, 1).astype(np.float32), y.astype(np.int64)


def shapes2d(a: LoadArgs) -> Dataset:
    """The default data set: 32x32x3, 1500 train / 500 val, 6 classes, < 1 s."""
    h, w = a.size(2, (32, 32))  # a.size checked the length
    size = (h, w)
    require(min(size) >= 8, "image_size", size, "at least 8x8 (four quadrants with a shape each)")
    n_train, n_val = a.n_train or 1500, a.n_val or 500
    x_tr, y_tr = shapes2d_arrays(n_train, size, np.random.default_rng([a.seed, 0]))
    x_va, y_va = shapes2d_arrays(n_val, size, np.random.default_rng([a.seed, 1]))
    params = {"image_size": size, "n_train": n_train, "n_val": n_val}
    return Dataset(
        "shapes2d",
        x_tr,
        y_tr,
        x_va,
        y_va,
        SHAPES2D_CLASSES,
        provenance("generated (ddmlflow.data.generated.shapes2d)", None, a.seed, params),
    )


def nodule_masks(kinds: np.ndarray, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """(m, h, w, d) masks of one structure each (ball, cube or rod along the depth axis),
    centred in an h x w x d column, jittered; sizes leave room for a 20 degree rotation."""
    m, (h, w, d) = len(kinds), shape
    s = min(h, w) / 20  # sizes are designed on a 20 x 20 column
    c = [(n / 2 + rng.uniform(-1.0, 1.0, m) * s)[:, None, None, None] for n in (h, w, d)]
    r = (rng.uniform(4.5, 5.5, m) * s)[:, None, None, None]
    dy = np.arange(h)[None, :, None, None] + 0.5 - c[0]
    dx = np.arange(w)[None, None, :, None] + 0.5 - c[1]
    dz = np.arange(d)[None, None, None, :] + 0.5 - c[2]
    ball = dx**2 + dy**2 + dz**2 <= r**2
    cube = (np.abs(dx) <= 0.8 * r) & (np.abs(dy) <= 0.8 * r) & (np.abs(dz) <= 0.8 * r)
    rod = (dx**2 + dy**2 <= (0.55 * r) ** 2) & (np.abs(dz) <= 1.8 * r)
    k = kinds[:, None, None, None]
    return np.where(k == 0, ball, np.where(k == 1, cube, rod))


def shapes3d_labels(n: int, seed: int, part: str) -> np.ndarray:
    """Pair labels of the train or val part, classes balanced to +-1."""
    return np.random.default_rng([seed, 2 if part == "train" else 3]).permutation(np.arange(n) % len(PAIRS))


def shapes3d_volumes(
    y: np.ndarray,
    rng: np.random.Generator,
    shape: tuple[int, int, int] = SHAPES3D_RAW,
) -> np.ndarray:
    """Volumes in HU (n, H, W, D) int16 of the pair labels y.

    Lung-like tissue (about -850 HU, smooth texture, noise); two dense structures
    (-100..300 HU) in two different quadrant columns of the axial plane.
    """
    h, w, d = shape
    qh, qw, n = h // 2, w // 2, len(y)
    kinds = np.array(PAIRS)[y]
    swap = rng.random(n) < 0.5
    kinds[swap] = kinds[swap, ::-1]
    quadrant = np.argsort(rng.random((n, 4)), axis=1)[:, :2]  # two different quadrants
    masks = nodule_masks(kinds.ravel(), (qh, qw, d), rng).reshape(n, 2, qh, qw, d)
    coarse = rng.random((n, 4, 4, 3))
    texture = np.einsum("ai,bj,ck,nijk->nabc", _lerp(4, h), _lerp(4, w), _lerp(3, d), coarse)
    vol = -850.0 + rng.uniform(-60, 60, (n, 1, 1, 1)) + 120 * (texture - 0.5) + rng.normal(0, 25, (n, h, w, d))
    density = rng.uniform(-100, 300, (n, 2))
    for q in range(4):
        r0, c0 = (q // 2) * qh, (q % 2) * qw
        for s in range(2):
            sel = quadrant[:, s] == q
            ink = density[sel, s][:, None, None, None] + rng.normal(0, 25, (int(sel.sum()), qh, qw, d))
            region = vol[sel, r0 : r0 + qh, c0 : c0 + qw]
            vol[sel, r0 : r0 + qh, c0 : c0 + qw] = np.where(masks[sel, s], ink, region)
    return np.clip(vol, -1024, 3071).astype(np.int16)


def write_shapes3d(root: Path, seed: int, n_train: int, n_val: int) -> dict[str, list[tuple[Path, int]]]:
    """Write the NIfTI files once (temp folder, then rename); return train/val (file, label).

    One folder per class, as in MosMed's tree; written in chunks to bound memory.
    """
    import nibabel as nib

    items: dict[str, list[tuple[Path, int]]] = {}
    for part, n in (("train", n_train), ("val", n_val)):
        items[part] = [
            (root / SHAPES3D_CLASSES[lab] / f"{part}_{i:04d}.nii.gz", int(lab))
            for i, lab in enumerate(shapes3d_labels(n, seed, part))
        ]
    if root.is_dir():
        return items
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}-"))
    try:
        for c in SHAPES3D_CLASSES:
            (tmp / c).mkdir()
        for part in ("train", "val"):
            rng = np.random.default_rng([seed, 4 if part == "train" else 5])
            for start in range(0, len(items[part]), 64):
                chunk = items[part][start : start + 64]
                vols = shapes3d_volumes(np.array([lab for _, lab in chunk]), rng)
                for (path, _), vol in zip(chunk, vols):
                    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp / path.relative_to(root)))
        os.replace(tmp, root)
    except OSError:
        if not root.is_dir():  # a concurrent writer that won the race is fine
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return items


def shapes3d(a: LoadArgs) -> Dataset:
    """CT-like volumes, 32x32x16x1, 6 classes, 600 train / 240 val, via NIfTI and the MosMed path."""
    size = a.size(3, (32, 32, 16))
    n_train, n_val = a.n_train or 600, a.n_val or 240
    spec = {
        "seed": a.seed,
        "n_train": n_train,
        "n_val": n_val,
        "raw": SHAPES3D_RAW,
        "v": VERSION,
        "design": SHAPES3D_DESIGN,
    }
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]
    root = cache_root(a.cache_dir) / "shapes3d-nifti" / key
    items = write_shapes3d(root, a.seed, n_train, n_val)
    return load_items(
        "shapes3d",
        SHAPES3D_CLASSES,
        items["train"],
        items["val"],
        partial(read_volume, size=size),
        {"image_size": size, "n_train": n_train, "n_val": n_val, "hu_clip": [-1000, 400]},
        replace(a, n_train=None, n_val=None),
        root,
        augment="rotate3d",
    )
