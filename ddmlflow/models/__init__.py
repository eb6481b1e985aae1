"""The papers' networks (Keras 3), one code path for 2D and 3D inputs.

``build`` makes a global net (``width_divisor=1``) or a proportionally thinner
local net for one subdomain; ``build_coarse`` makes KLW's coarse net. Models
come back uncompiled; ``loss_for`` names the matching loss. Every net ends in
a Dense ``logits`` layer and an Activation ``probs`` layer: one sigmoid unit
when K = 2, else a K-way softmax.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    import keras

# The network names, readable without importing Keras (the config check uses them).
# A new network: its module and one line here ("module:function" inside ddmlflow.models).
_BUILDERS = {
    "vgg3": "vgg:build_vgg3",
    "vgg9": "vgg:build_vgg9",
    "resnet20": "resnet:build_resnet20",
    "resnet20a": "resnet:build_resnet20a",
    "cnn3d": "cnn3d:build_cnn3d",
}
MODELS: tuple[str, ...] = tuple(_BUILDERS)
_LAZY = {"build_coarse": "coarse", "output_units": "layers"}  # Keras-backed, imported on first use

LOCAL_FORMS: frozenset[str] = frozenset({"vgg9"})  # models whose KLW local net has its own form

__all__ = ["MODELS", "build", "build_coarse", "loss_for", "output_units", "to_probabilities"]


def register_layers() -> None:
    """Import the modules that register the package's custom layers (BoxCrop, ChannelPad), so saved models
    load with ``safe_mode`` in any process; call before ``keras.saving.load_model``."""
    for module in ("cnn_dnn", "resnet"):
        importlib.import_module(f".{module}", __name__)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)


def build(
    model: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    width_divisor: int = 1,
    name: str | None = None,
    dropout: float | None = None,
    klw_local: bool = True,
) -> keras.Model:
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
    register_layers()
    module, fn = _BUILDERS[model].split(":")
    builder = getattr(importlib.import_module(f".{module}", __name__), fn)
    local_form = {"klw_local": klw_local} if model in LOCAL_FORMS else {}
    return builder(tuple(input_shape), num_classes, width_divisor, name=name or model, dropout=dropout, **local_form)


def to_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Class probabilities, one column per class: a (n, 1) sigmoid becomes [1 - p, p]."""
    outputs = np.asarray(outputs)
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        return np.concatenate([1.0 - outputs, outputs], axis=1)
    return outputs


def loss_for(num_classes: int) -> str:
    """Keras loss for integer labels: binary for one sigmoid unit, else sparse categorical."""
    if __getattr__("output_units")(num_classes) == 1:
        return "binary_crossentropy"
    return "sparse_categorical_crossentropy"
