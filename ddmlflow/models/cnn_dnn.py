"""The CNN-DNN of KLW: N local CNNs on their boxes, a dense coarse net on their outputs.

``coarse_features`` is the one definition of the coarse net's input (the
concatenated raw local outputs: K probabilities per local, or the single
sigmoid probability when K = 2), shared by training, evaluation and serving.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def coarse_features(local_probs: Sequence[np.ndarray]) -> np.ndarray:
    """(n, N*units) from N arrays of class probabilities (n, K); binary keeps p(class 1) only."""
    k = local_probs[0].shape[1]
    return np.concatenate([p[:, 1:] if k == 2 else p for p in local_probs], axis=1).astype("float32")


def predict_two_step(local_models: Sequence, coarse, decomposition, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities of the CNN-DNN for whole images ``x`` (n, *image_shape)."""
    from . import to_probabilities

    probs = [to_probabilities(m.predict(decomposition.crop(x, i), batch_size=batch_size, verbose=0))
             for i, m in enumerate(local_models)]
    return to_probabilities(coarse.predict(coarse_features(probs), batch_size=batch_size, verbose=0))
