"""The 3D CNN for chest CT volumes (KLW sec. 4.4; keras-io "3D image classification").

Four stacks of Conv (64, 64, 128, 256 filters, kernel 3, ReLU, valid padding)
-> MaxPool 2 -> BatchNormalization; global average pooling; Dense 512 ReLU;
Dropout 0.3; ``logits`` + ``probs`` (one sigmoid unit for K = 2). KLW's text
says 256 dense units, but Table 2's 1.3529M (global, 128x128x64) and 0.3396M
(2x2x1 local at half width) need 512: we get 1,352,897 and 339,553 (all
weights, BN moving statistics included).

Local nets see small boxes (a 4x4x2 split of 128x128x64 gives 32x32x32), where
four valid convolutions and poolings would shrink an axis below 1. Then that
stack switches to same padding and/or skips pooling on the short axes; each
change is listed in ``model.adaptations`` and the model name gets
``_adapted``. Parameter counts do not change: global pooling follows.
The same code builds a 2D net from a 2D input shape.

BatchNormalization uses momentum 0.9 (Keras' default is 0.99, keras-io keeps
it): with few volumes per epoch the 0.99 moving statistics have not settled
after tens of steps, and the net then predicts one class at inference while
its training accuracy is perfect. 0.9 is PyTorch's default; parameter counts
are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from .layers import check_input, conv, finish, global_avg_pool, head, pool_adapted, scaled, spatial_shape

FILTERS = (64, 64, 128, 256)
DENSE = 512
DROPOUT = 0.3
BN_MOMENTUM = 0.9
KERNEL = 3


def build_cnn3d(
    input_shape: Sequence[int],
    num_classes: int,
    width_divisor: int = 1,
    name: str = "cnn3d",
    dropout: float | None = None,
) -> keras.Model:
    """KLW's CT network, widths divided by ``width_divisor``, adapted to small boxes."""
    dims = check_input(input_shape, num_classes, width_divisor, dropout)
    adaptations: list[str] = []
    inputs = keras.Input(tuple(input_shape), name="volume")
    x = inputs
    for s, filters in enumerate(FILTERS, start=1):
        padding = "valid"
        if min(spatial_shape(x)) < KERNEL:  # a valid conv would leave an empty axis
            padding = "same"
            adaptations.append(f"conv{s}: same padding on input {spatial_shape(x)}")
        x = conv(dims, scaled(filters, width_divisor), KERNEL, padding=padding, activation="relu", name=f"conv{s}")(x)
        x = pool_adapted(x, f"pool{s}", adaptations)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"bn{s}")(x)
    x = global_avg_pool(dims, name="gap")(x)
    x = layers.Dense(scaled(DENSE, width_divisor), activation="relu", name="dense1")(x)
    x = layers.Dropout(DROPOUT if dropout is None else dropout, name="drop")(x)
    return finish(inputs, head(x, num_classes), name, adaptations)
