"""Step 1 (KLW sec. 3.1): load the data, cut it into boxes, log both once."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow

from .. import data
from ..config import RunConfig
from ..decomposition import make
from ..describe import decompose_note
from ..results import Decomposed
from ..tags import CLASS_NAMES_TAG, NOTE_TAG, NUM_CLASSES_TAG
from ..tracking import log_params, retry
from .prepared import log_prepared


def decompose(cfg: RunConfig) -> Decomposed:
    """In the active run: the prepared data set, ``decomposition.json`` and ``boxes.png``."""
    log_params(cfg.params())
    ds = data.load(**cfg.data_args())
    decomposition = make(cfg.decomposition, ds.input_shape, cfg.overlap)
    log_prepared(ds, decomposition)
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp, "boxes.png")
        decomposition.draw(ds.x_train[0], png)
        retry(mlflow.log_artifact, str(png))
    retry(
        mlflow.log_params,
        {
            "image_shape": "x".join(map(str, ds.input_shape)),
            "n_boxes": decomposition.n,
            "train_size": len(ds.y_train),
            "val_size": len(ds.y_val),
            "cache_key": ds.provenance.get("cache_key", ""),
        },
    )
    mlflow.set_tags(
        {
            NUM_CLASSES_TAG: ds.num_classes,
            CLASS_NAMES_TAG: ",".join(ds.class_names)[:5000],
            NOTE_TAG: decompose_note(
                cfg, ds.input_shape, decomposition.n, len(ds.y_train), len(ds.y_val), ds.num_classes
            ),
        }
    )
    return Decomposed(mlflow.active_run().info.run_id, decomposition.n, tuple(ds.input_shape), ds.num_classes)
