"""The global coarse net of KLW sec. 3.2: a small dense net on the local decisions.

Its input is the concatenation of the N local nets' outputs, ``output_units(K)``
numbers each (the class probabilities, or the one sigmoid probability when
K = 2). ReLU hidden layers, each optionally followed by dropout (KLW use 0.2
for Yale B and 0.4 for the CT scans), then ``logits`` + ``probs``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from ..errors import require
from .layers import head, output_units


def build_coarse(
    n_locals: int, num_classes: int, hidden: Sequence[int] = (128, 64, 32), dropout: float = 0.0, name: str = "coarse"
) -> keras.Model:
    """Dense net from ``n_locals * output_units(K)`` local outputs to the K-class decision."""
    require(isinstance(n_locals, int) and n_locals >= 1, "n_locals", n_locals, "an integer >= 1")
    require(isinstance(num_classes, int) and num_classes >= 2, "num_classes", num_classes, "an integer >= 2")
    require(all(isinstance(h, int) and h >= 1 for h in hidden), "hidden", hidden, "a sequence of positive integers")
    require(0.0 <= dropout < 1.0, "dropout", dropout, "a rate in [0, 1)")
    inputs = keras.Input((n_locals * output_units(num_classes),), name="local_outputs")
    x = inputs
    for i, units in enumerate(hidden, start=1):
        x = layers.Dense(units, activation="relu", name=f"dense{i}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"drop{i}")(x)
    return keras.Model(inputs, head(x, num_classes), name=name)
