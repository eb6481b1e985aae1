"""The prepared data set, logged once by ``decompose`` and shared by every later step.

Arrays are stored as ``.npy`` (not ``.npz``) so that each step memory-maps them
and a local slices its box without loading N copies of the data.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import mlflow
import numpy as np

from ..decomposition import Decomposition
from ..tracking import get_run, retry, work_dir

ARRAYS = ("x_train", "y_train", "x_val", "y_val")


@dataclass
class Prepared:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    class_names: list[str]
    decomposition: Decomposition
    dataset: str
    augment: str | None

    @classmethod
    def of(cls, ds, decomposition: Decomposition, n: int | None = None) -> Prepared:
        """A loaded data set as the steps after ``decompose`` see it; ``n``: its first ``n`` training
        images and the same share of its validation images."""
        n = min(n or len(ds.x_train), len(ds.x_train))
        n_val = max(1, round(n * len(ds.x_val) / len(ds.x_train)))
        names = list(ds.class_names)
        xs = (ds.x_train[:n], ds.y_train[:n], ds.x_val[:n_val], ds.y_val[:n_val])
        return cls(*xs, names, decomposition, ds.name, ds.augment)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def box(self, i: int | None) -> tuple:
        """(x_train, y_train, x_val, y_val) of box i, or of whole images for ``None``."""
        if i is None:
            return np.asarray(self.x_train), self.y_train, np.asarray(self.x_val), self.y_val
        d = self.decomposition
        return (
            np.ascontiguousarray(d.crop(self.x_train, i)),
            self.y_train,
            np.ascontiguousarray(d.crop(self.x_val, i)),
            self.y_val,
        )

    def augmented_train(self, i: int | None, cfg):
        """Augmented training batches of box i (``None``: whole images): the whole volume is
        rotated, then cropped, so with one ``cfg.seed`` every local sees crops of the same
        rotated volumes the global net sees (KLW: no augmentation; keras-io CT: rotation)."""
        from ..training import augmented  # lazy: Keras; only the training steps need it, not decompose (full parent)

        crop = None if i is None else partial(self.decomposition.crop, i=i)
        return augmented(self.x_train, self.y_train, replace(cfg, augment=self.augment), crop)


def log_prepared(ds, decomposition: Decomposition) -> None:
    """Log the data set and the decomposition into the active run."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp, "data")
        d.mkdir()
        for name in ARRAYS:
            np.save(d / f"{name}.npy", getattr(ds, name))
        meta = {
            "class_names": list(ds.class_names),
            "dataset": ds.name,
            "augment": ds.augment,
            "provenance": ds.provenance,
        }
        (d / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        retry(mlflow.log_artifacts, str(d), "data")
    retry(mlflow.log_text, decomposition.to_json(), "decomposition.json")


def load_prepared(decompose_run: str) -> Prepared:
    """Download (once per machine, atomically) and memory-map a decompose run's output."""
    get_run(decompose_run, "decompose_run")
    dest = work_dir("inputs") / decompose_run
    if not dest.exists():
        tmp = Path(tempfile.mkdtemp(dir=dest.parent))
        try:
            mlflow.artifacts.download_artifacts(run_id=decompose_run, artifact_path="data", dst_path=str(tmp))
            mlflow.artifacts.download_artifacts(
                run_id=decompose_run, artifact_path="decomposition.json", dst_path=str(tmp)
            )
            os.replace(tmp, dest)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
            if not dest.exists():
                raise
    arrays = {n: np.load(dest / "data" / f"{n}.npy", mmap_mode="r") for n in ARRAYS}
    meta = json.loads((dest / "data" / "meta.json").read_text())
    decomposition = Decomposition.from_json((dest / "decomposition.json").read_text())
    return Prepared(
        **arrays,
        class_names=meta["class_names"],
        decomposition=decomposition,
        dataset=meta["dataset"],
        augment=meta.get("augment"),
    )
