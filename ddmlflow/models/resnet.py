"""ResNet20, the CIFAR variant of He et al. (2016), 2D or 3D.

Stem: 3x3 conv (16) + BN + ReLU. Three stages of three basic blocks with 16,
32, 64 filters (conv-BN-ReLU-conv-BN, add the shortcut, ReLU); the first block
of stages 2 and 3 halves the spatial size with stride 2 and gets a 1x1 conv
projection shortcut without BN (as in the keras-io ResNet example; with BN the
counts below grow by 192 and 96 and drift further from KLW Table 2). Global
average pooling, ``logits``, ``probs``. Convolutions keep their bias. Widths
are divided by ``width_divisor`` for local nets.

Trainable counts (BN moving statistics are not trainable): 273,066 for
CIFAR-10 32x32x3 and 69,082 for a 16x16 local net at half width. KLW Table 2
reports 0.2718M and 0.0691M (TF-Flowers, K=5: 0.2715M and 0.0689M; ours
272,741 and 68,917). The local nets match; the global net is ~1.3k (1,266)
larger than the paper's, an implementation detail the paper does not
describe, so we keep the standard network.
ResNet20 has no dropout; ``dropout``, when given, is applied before the logits.
"""
from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

from .layers import check_input, conv, finish, global_avg_pool, head, scaled

STAGES = (16, 32, 64)
BLOCKS_PER_STAGE = 3


def _bn(name: str) -> layers.Layer:
    return layers.BatchNormalization(name=name)


def basic_block(x, dims: int, filters: int, stride: int, name: str):
    """conv-BN-ReLU-conv-BN + shortcut, ReLU; a 1x1 projection where the shape changes."""
    y = conv(dims, filters, 3, strides=stride, padding="same", name=f"{name}_conv1")(x)
    y = layers.Activation("relu", name=f"{name}_relu1")(_bn(f"{name}_bn1")(y))
    y = conv(dims, filters, 3, padding="same", name=f"{name}_conv2")(y)
    y = _bn(f"{name}_bn2")(y)
    shortcut = x
    if stride != 1 or int(x.shape[-1]) != filters:
        shortcut = conv(dims, filters, 1, strides=stride, padding="same", name=f"{name}_proj")(x)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_out")(y)


def build_resnet20(input_shape: Sequence[int], num_classes: int, width_divisor: int = 1,
                   name: str = "resnet20", dropout: float | None = None) -> keras.Model:
    """ResNet20 (3 stages x 3 basic blocks, 16/32/64 filters, divided by ``width_divisor``)."""
    dims = check_input(input_shape, num_classes, width_divisor, dropout)
    inputs = keras.Input(tuple(input_shape), name="image")
    x = conv(dims, scaled(STAGES[0], width_divisor), 3, padding="same", name="stem_conv")(inputs)
    x = layers.Activation("relu", name="stem_relu")(_bn("stem_bn")(x))
    for s, filters in enumerate(STAGES, start=1):
        for b in range(1, BLOCKS_PER_STAGE + 1):
            stride = 2 if s > 1 and b == 1 else 1
            x = basic_block(x, dims, scaled(filters, width_divisor), stride, f"s{s}b{b}")
    x = global_avg_pool(dims, name="gap")(x)
    if dropout:
        x = layers.Dropout(dropout, name="drop")(x)
    return finish(inputs, head(x, num_classes), name, [])
