"""The CNN-DNN of KLW: N local CNNs on their boxes, a dense coarse net on their outputs.

``coarse_features`` is the one definition of the coarse net's input (the
concatenated raw local outputs: K probabilities per local, or the single
sigmoid probability when K = 2), shared by training, evaluation and serving.
``build_coherent`` wires the same nets into one Keras model (KLW-TL's
CNN-DNN-coherent and CNN-DNN-transfer); its ``BoxCrop`` layer is registered
when this module is imported, so import it before loading such a model.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from ..errors import require
from . import build, build_coarse


def coarse_features(local_probs: Sequence[np.ndarray]) -> np.ndarray:
    """(n, N*units) from N arrays of class probabilities (n, K); binary keeps p(class 1) only."""
    k = local_probs[0].shape[1]
    return np.concatenate([p[:, 1:] if k == 2 else p for p in local_probs], axis=1).astype("float32")


# -- the CNN-DNN as one Keras model (KLW-TL sec. 2.1 "coherent", 2.2 "transfer") ----------------------


@keras.saving.register_keras_serializable(package="ddmlflow")
class BoxCrop(keras.layers.Layer):
    """``x[:, box]``: one subdomain of a batch of images, the layer form of ``Decomposition.crop``.

    A named layer (not a ``Lambda``) so the coherent model saves as ``.keras``
    and loads with ``safe_mode=True``.
    """

    def __init__(self, start: Sequence[int], stop: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.start, self.stop = tuple(int(a) for a in start), tuple(int(b) for b in stop)

    def call(self, x):
        return x[(slice(None),) + tuple(slice(a, b) for a, b in zip(self.start, self.stop)) + (slice(None),)]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *(b - a for a, b in zip(self.start, self.stop)), input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "start": list(self.start), "stop": list(self.stop)}


def build_coherent(
    local_models: Sequence[keras.Model], coarse_model: keras.Model, decomposition, name: str = "cnn_dnn_coherent"
) -> keras.Model:
    """The CNN-DNN as one model: whole image -> N crops -> N local nets -> concat -> coarse net.

    The concatenated local outputs are exactly ``coarse_features`` (the sigmoid
    unit of a binary local is p(class 1)), so with the same weights the forward
    pass equals each local on its crop, then the coarse net; training it trains all nets jointly
    (KLW-TL: CNN-DNN-coherent; from pretrained locals: CNN-DNN-transfer).
    The given nets become layers of the new model (weights are shared, not copied).
    """
    require(
        len(local_models) == decomposition.n,
        "local_models",
        len(local_models),
        f"one local net per box ({decomposition.n})",
    )
    image = keras.Input(decomposition.image_shape, name="image")
    outputs = []
    for i, (net, box) in enumerate(zip(local_models, decomposition.boxes)):
        crop = BoxCrop(box.start, box.stop, name=f"crop_{i:02d}")(image)
        # a fresh wrapper with a unique name: loaded locals may share names; the layers are shared
        outputs.append(keras.Model(net.inputs[0], net.outputs[0], name=f"local_{i:02d}")(crop))
    features = outputs[0] if len(outputs) == 1 else keras.layers.Concatenate(name="local_outputs")(outputs)
    coarse = keras.Model(coarse_model.inputs[0], coarse_model.outputs[0], name="coarse")
    return keras.Model(image, coarse(features), name=name)


def build_coherent_from_scratch(
    model: str,
    decomposition,
    num_classes: int,
    width_divisor: int = 2,
    coarse_hidden: Sequence[int] = (128, 64, 32),
    coarse_dropout: float = 0.0,
    name: str = "cnn_dnn_coherent",
) -> keras.Model:
    """A randomly initialised coherent CNN-DNN (KLW-TL: CNN-DNN-coherent)."""
    local = [
        build(model, decomposition.input_shape(i), num_classes, width_divisor, name=f"local_{i:02d}")
        for i in range(decomposition.n)
    ]
    coarse = build_coarse(decomposition.n, num_classes, hidden=tuple(coarse_hidden), dropout=coarse_dropout)
    return build_coherent(local, coarse, decomposition, name=name)
