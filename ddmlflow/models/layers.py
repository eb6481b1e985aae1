"""Building blocks shared by all networks: one code path for 2D and 3D.

The spatial dimension is data, ``dims = len(input_shape) - 1`` (the last axis
is channels), so ``conv(dims, ...)`` is a ``Conv2D`` or a ``Conv3D`` and no
architecture is written twice. Small sub-images or sub-volumes (local nets)
can be smaller than a pooling window or a valid convolution needs; the
helpers here shrink the operation instead of failing and say so, so the
model can report what it changed (``model.adaptations``).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from ..errors import require

_CONV = {2: layers.Conv2D, 3: layers.Conv3D}
_POOL = {2: layers.MaxPooling2D, 3: layers.MaxPooling3D}
_GAP = {2: layers.GlobalAveragePooling2D, 3: layers.GlobalAveragePooling3D}


def check_input(input_shape: Sequence[int], num_classes: int, width_divisor: int, dropout: float | None) -> int:
    """Validate the common ``build`` arguments; return the spatial dimension (2 or 3)."""
    shape = tuple(input_shape)
    require(
        len(shape) in (3, 4) and all(isinstance(s, int) and s > 0 for s in shape),
        "input_shape",
        input_shape,
        "(H, W, C) or (H, W, D, C) with positive integer sizes",
    )
    require(isinstance(num_classes, int) and num_classes >= 2, "num_classes", num_classes, "an integer >= 2")
    require(isinstance(width_divisor, int) and width_divisor >= 1, "width_divisor", width_divisor, "an integer >= 1")
    require(dropout is None or 0.0 <= dropout < 1.0, "dropout", dropout, "None or a rate in [0, 1)")
    return len(shape) - 1


def scaled(width: int, width_divisor: int) -> int:
    """A layer width divided by ``width_divisor`` (local nets are proportionally thinner)."""
    return max(1, width // width_divisor)


def spatial_shape(x) -> tuple[int, ...]:
    """Spatial sizes of a symbolic tensor (batch and channel axes dropped)."""
    return tuple(int(s) for s in x.shape[1:-1])


def conv(dims: int, filters: int, kernel_size: int = 3, **kwargs) -> layers.Layer:
    """``Conv{dims}D`` with a cubic kernel."""
    return _CONV[dims](filters, kernel_size, **kwargs)


def max_pool(dims: int, pool_size: int | tuple[int, ...] = 2, **kwargs) -> layers.Layer:
    """``MaxPooling{dims}D``."""
    return _POOL[dims](pool_size, **kwargs)


def global_avg_pool(dims: int, **kwargs) -> layers.Layer:
    """``GlobalAveragePooling{dims}D``."""
    return _GAP[dims](**kwargs)


def fit_pool(x, pool: int = 2) -> tuple[int, ...] | None:
    """Pool size per spatial axis that keeps every axis >= 1.

    An axis shorter than the window is not pooled (size 1 there). Returns
    ``None`` when no axis can be pooled, i.e. the pooling layer is skipped.
    """
    size = tuple(pool if s >= pool else 1 for s in spatial_shape(x))
    return None if all(p == 1 for p in size) else size


def pool_adapted(x, name: str, adaptations: list[str], pool: int = 2):
    """Max pooling by ``pool``, shrunk on axes that are too short; notes any change."""
    dims = len(spatial_shape(x))
    size = fit_pool(x, pool)
    if size is None:
        adaptations.append(f"{name}: skipped (input {spatial_shape(x)})")
        return x
    if any(p != pool for p in size):
        adaptations.append(f"{name}: pool {size} on input {spatial_shape(x)}")
    return max_pool(dims, size, name=name)(x)


def output_units(num_classes: int) -> int:
    """Output width of every net: one sigmoid unit for K = 2, else K softmax units."""
    return 1 if num_classes == 2 else num_classes


def head(x, num_classes: int) -> keras.KerasTensor:
    """Dense ``logits`` then a separate ``probs`` activation.

    Binary problems get one sigmoid unit (KLW 4.4), others a K-way softmax.
    The logits stay a layer of their own because composing sub-networks
    (Gu et al., Theorem 2.1) sums logits, not probabilities.
    """
    units = output_units(num_classes)
    x = layers.Dense(units, name="logits")(x)
    return layers.Activation("sigmoid" if units == 1 else "softmax", name="probs")(x)


def finish(inputs, outputs, name: str, adaptations: list[str]) -> keras.Model:
    """The ``keras.Model``, with ``adaptations`` attached and flagged in its name.

    The attribute is not saved with the model; the ``_adapted`` name is.
    """
    if adaptations:
        name = f"{name}_adapted"
    model = keras.Model(inputs, outputs, name=name)
    model.adaptations = list(adaptations)
    return model
