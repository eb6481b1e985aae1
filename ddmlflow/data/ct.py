"""CT volumes: NIfTI reading and the preprocessing of KLW 4.4 / the keras-io example.

"3D image classification from CT scans" (keras-io) reads raw MosMedData scans
in Hounsfield units (HU, -1024 to above 2000), clips them to [-1000, 400] (above
400 is bone), scales to [0, 1], rotates 90 degrees in the axial plane and
resizes to 128x128x64 with linear interpolation. We do exactly that, and
recognise volumes that are already preprocessed (values in [0, 1]) so they are
not clipped, scaled or rotated a second time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import InputError, require

NIFTI_SUFFIXES = (".nii", ".nii.gz")
MOSMED_SIZE = (128, 128, 64)
HU_MIN, HU_MAX = -1000.0, 400.0
ROTATE3D_ANGLES = (-20, -10, -5, 5, 10, 20)  # the keras-io augmentation
_TOL = 1e-3  # float noise of a preprocessed volume (e.g. -2e-17)


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def read_nifti(path: str | Path) -> np.ndarray:
    """The voxel array of a NIfTI file (scaling applied), float32, 3D."""
    import nibabel as nib  # only the 3D path needs it
    from nibabel.dataobj_images import DataobjImage

    try:
        img = nib.load(str(path))
        if not isinstance(img, DataobjImage):  # nib.load's type is any image; a NIfTI one holds voxels
            raise TypeError(f"{type(img).__name__} holds no voxel array")
        vol = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as e:  # noqa: BLE001 - nibabel, gzip and numpy all raise their own types
        raise InputError("file", str(path), f"unreadable NIfTI volume ({type(e).__name__}: {e})") from None
    while vol.ndim > 3 and vol.shape[-1] == 1:
        vol = vol[..., 0]
    require(vol.ndim == 3, "file", str(path), f"a 3D volume (got shape {vol.shape})")
    require(bool(np.isfinite(vol).all()), "file", str(path), "finite voxel values (found NaN or inf)")
    return vol


def is_preprocessed(vol: np.ndarray) -> bool:
    return bool(vol.min() >= -_TOL and vol.max() <= 1 + _TOL)


def resize_volume(vol: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """Linear (order 1) zoom to size, as the example."""
    if vol.shape == tuple(size):
        return vol
    factors = [t / s for t, s in zip(size, vol.shape)]
    return ndimage.zoom(vol, factors, order=1)


def preprocess_ct(vol: np.ndarray, size: tuple[int, int, int] | None = MOSMED_SIZE) -> np.ndarray:
    """HU volume -> [0, 1], rotated 90 degrees, resized; a [0, 1] volume is only resized."""
    if not is_preprocessed(vol):
        vol = (np.clip(vol, HU_MIN, HU_MAX) - HU_MIN) / (HU_MAX - HU_MIN)
        vol = ndimage.rotate(vol, 90, reshape=False)
    if size is not None:
        vol = resize_volume(vol, size)
    return np.clip(vol, 0, 1).astype(np.float32)  # the spline rotation may overshoot a little


def read_volume(path: str | Path, size: tuple[int, ...] | None = MOSMED_SIZE) -> np.ndarray:
    """One NIfTI scan -> float32 (H, W, D, 1) in [0, 1] (a size of another length: InputError)."""
    hwd = None
    if size is not None:
        require(len(size) == 3, "image_size", tuple(size), f"(H, W, D) for the NIfTI volume {path}")
        h, w, d = size
        hwd = (h, w, d)
    return preprocess_ct(read_nifti(path), hwd)[..., None]


def rotate3d(x: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
    """Rotate each volume of a batch (n, H, W, D, C) in the H-W plane by a random angle (volume ``k``'s
    drawn from ``rngs[k]``)."""
    out = np.empty_like(x)
    for i, (v, rng) in enumerate(zip(x, rngs, strict=True)):
        angle = float(rng.choice(ROTATE3D_ANGLES))
        out[i] = np.clip(ndimage.rotate(v, angle, axes=(1, 0), reshape=False), 0, 1)
    return out
