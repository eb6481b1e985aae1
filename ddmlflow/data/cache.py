"""Prepared arrays cached as .npz, downloads, and a progress bar on stderr.

Decoding 60,000 JPEGs or resampling 200 CT scans takes a while; doing it once
per source and parameters is enough. The key hashes every source file's path,
size and mtime plus the preprocessing parameters, so editing a file or asking
for another size prepares again, and a second load reads no source file.
Files are written to a temporary name and moved into place: a failed or
interrupted preparation never leaves a half-written cache entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import numpy as np

VERSION = 1  # bump when the preparation of any data set changes


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """cache_dir, else $DDMLFLOW_CACHE, else ~/.cache/ddmlflow."""
    root = cache_dir or os.environ.get("DDMLFLOW_CACHE") or Path.home() / ".cache" / "ddmlflow"
    return Path(root).expanduser()


def cache_key(files: Iterable[os.PathLike], params: dict) -> str:
    """Hash of (path, size, mtime) of every source file, in order, and the parameters."""
    h = hashlib.sha256(json.dumps([VERSION, params], sort_keys=True, default=str).encode())
    for f in files:
        st = os.stat(f)
        h.update(f"{os.path.abspath(f)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _pack(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Store x arrays as uint8 when they are exactly k/255 (8-bit images): 4x less disk."""
    out = {}
    for k, a in arrays.items():
        if a.dtype == np.float32:
            q = np.round(a * 255).astype(np.uint8)
            if np.array_equal(q.astype(np.float32) / 255, a):
                out[k + "__u8"] = q
                continue
        out[k] = a
    return out


def _unpack(z) -> dict[str, np.ndarray]:
    return {k.removesuffix("__u8"): (z[k].astype(np.float32) / 255 if k.endswith("__u8") else z[k]) for k in z.files}


def load_or_build(root: Path, name: str, key: str, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """root/name-key.npz if it is there, else build(), save atomically and return it."""
    path = root / f"{name}-{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return _unpack(z)
        except (OSError, ValueError, KeyError):  # truncated by a full disk etc.: prepare again
            pass
    arrays = build()
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{name}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, allow_pickle=True, **_pack(arrays))  # numpy's default, named: no array takes its place
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:  # read-only or full cache: still return the data
        warnings.warn(f"ddmlflow: cannot write data cache {path}: {e}", stacklevel=2)
    return arrays


class Progress:
    """A one-line bar on stderr that shows up only once a job takes more than `delay` s."""

    def __init__(self, total: int, label: str, enabled: bool = True, delay: float = 2.0):
        self.total, self.label, self.enabled, self.delay = max(total, 1), label, enabled, delay
        self.done, self.start, self.last, self.shown = 0, time.monotonic(), 0.0, False

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self.start > self.delay and now - self.last > 0.25:
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
        sys.stderr.write(f"\r{self.label} [{bar}] {self.done}/{self.total} {now - self.start:.0f}s")
        sys.stderr.flush()
        self.last, self.shown = now, True

    def close(self) -> None:
        if self.shown:
            self._draw(time.monotonic())
            sys.stderr.write("\n")


def download(url: str, dest: Path, progress: bool = True) -> Path:
    """Fetch url to dest once (temp file, then rename); raises OSError offline."""
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}-", suffix=".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, os.fdopen(fd, "wb") as f:
            bar = Progress(int(r.headers.get("Content-Length") or 0) >> 20, f"download {dest.name} (MiB)", progress)
            while chunk := r.read(1 << 20):
                f.write(chunk)
                bar.update()
            bar.close()
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def extract(archive: Path, dest: Path) -> Path:
    """Unpack a .tgz/.zip into dest once (into a temp folder, then rename)."""
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        # a zip takes no filter (nor do Pythons before 3.10.12), so none is passed for it
        data_filter: dict[str, Literal["data"]] = {} if archive.suffix == ".zip" else {"filter": "data"}
        shutil.unpack_archive(archive, tmp, **data_filter)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
