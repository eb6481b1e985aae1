"""The papers' networks (Keras 3), one code path for 2D and 3D inputs.

``build`` makes a global net (``width_divisor=1``) or a proportionally thinner
local net for one subdomain; ``build_coarse`` makes KLW's coarse net. Models
come back uncompiled; ``loss_for`` names the matching loss. Every net ends in
a Dense ``logits`` layer and an Activation ``probs`` layer: one sigmoid unit
when K = 2, else a K-way softmax.
"""
from __future__ import annotations

from typing import Callable

import keras
import numpy as np

from ..errors import InputError
from . import cnn_dnn  # noqa: F401 - registers BoxCrop, so saved coherent models load anywhere
from .cnn3d import build_cnn3d
from .coarse import build_coarse
from .layers import output_units
from .resnet import build_resnet20, build_resnet20a
from .vgg import build_vgg3, build_vgg9

MODELS: tuple[str, ...] = ("vgg3", "vgg9", "resnet20", "resnet20a", "cnn3d")

_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "vgg3": build_vgg3, "vgg9": build_vgg9, "resnet20": build_resnet20, "resnet20a": build_resnet20a,
    "cnn3d": build_cnn3d,
}

LOCAL_FORMS: frozenset[str] = frozenset({"vgg9"})  # models whose KLW local net has its own form

__all__ = ["MODELS", "build", "build_coarse", "loss_for", "output_units", "to_probabilities"]


def build(model: str, input_shape: tuple[int, ...], num_classes: int, width_divisor: int = 1,
          name: str | None = None, dropout: float | None = None, klw_local: bool = True) -> keras.Model:
    """Build (not compile) ``model`` for ``input_shape`` (spatial..., channels).

    ``len(input_shape) - 1`` is the spatial dimension (2 or 3). Local nets
    pass ``width_divisor`` > 1; ``dropout`` overrides the model's default rate.
    Where KLW's local net is not the global net made thinner (VGG9, see
    ``vgg``), ``klw_local=False`` builds the thinner global net instead (Gu et
    al.'s sub-networks). The model's ``adaptations`` list says what was
    changed to fit a small input.
    """
    if model not in _BUILDERS:
        raise InputError("model", model, f"one of {', '.join(MODELS)}")
    local_form = {"klw_local": klw_local} if model in LOCAL_FORMS else {}
    return _BUILDERS[model](tuple(input_shape), num_classes, width_divisor,
                            name=name or model, dropout=dropout, **local_form)


def to_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Class probabilities, one column per class: a (n, 1) sigmoid becomes [1 - p, p]."""
    outputs = np.asarray(outputs)
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        return np.concatenate([1.0 - outputs, outputs], axis=1)
    return outputs


def loss_for(num_classes: int) -> str:
    """Keras loss for integer labels: binary for one sigmoid unit, else sparse categorical."""
    if output_units(num_classes) == 1:
        return "binary_crossentropy"
    return "sparse_categorical_crossentropy"
