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

``resnet20a`` is He et al.'s own CIFAR choice ("option A"): parameter-free
identity shortcuts, subsampled and zero-padded in channels where the shape
changes. It reproduces every ResNet20 row of KLW Table 2 exactly, parameters
(``count_params``: 0.2718M / 0.0691M CIFAR-10, 0.2715M / 0.0689M TF-Flowers)
and FLOPs (0.8110 / 0.0513; 25.6608 / 0.7206), so it is most likely what the
paper trained. The projection variant stays ``resnet20``, the network most
implementations call ResNet20.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from .layers import check_input, conv, finish, global_avg_pool, head, max_pool, scaled

STAGES = (16, 32, 64)
BLOCKS_PER_STAGE = 3


def _bn(name: str) -> layers.Layer:
    return layers.BatchNormalization(name=name)


@keras.saving.register_keras_serializable(package="ddmlflow")
class ChannelPad(layers.Layer):
    """Appends ``extra`` zero channels: the parameter-free option-A shortcut of He et al."""

    def __init__(self, extra: int, **kwargs):
        super().__init__(**kwargs)
        self.extra = int(extra)

    def call(self, x):
        return keras.ops.pad(x, [[0, 0]] * (len(x.shape) - 1) + [[0, self.extra]])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + self.extra)

    def get_config(self):
        return {**super().get_config(), "extra": self.extra}


def shortcut_a(x, dims: int, filters: int, stride: int, name: str):
    """Option A: subsample by ``stride`` and zero-pad the channels up to ``filters``."""
    if stride != 1:
        x = max_pool(dims, pool_size=1, strides=stride, name=f"{name}_sub")(x)
    return ChannelPad(filters - int(x.shape[-1]), name=f"{name}_pad")(x)


def basic_block(x, dims: int, filters: int, stride: int, name: str, shortcut: str = "projection"):
    """conv-BN-ReLU-conv-BN + shortcut, ReLU; a 1x1 projection (or option A) where the shape changes."""
    y = conv(dims, filters, 3, strides=stride, padding="same", name=f"{name}_conv1")(x)
    y = layers.Activation("relu", name=f"{name}_relu1")(_bn(f"{name}_bn1")(y))
    y = conv(dims, filters, 3, padding="same", name=f"{name}_conv2")(y)
    y = _bn(f"{name}_bn2")(y)
    if stride != 1 or int(x.shape[-1]) != filters:
        shortcut = (
            shortcut_a(x, dims, filters, stride, name)
            if shortcut == "identity"
            else conv(dims, filters, 1, strides=stride, padding="same", name=f"{name}_proj")(x)
        )
    else:
        shortcut = x
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_out")(y)


def build_resnet20(
    input_shape: Sequence[int],
    num_classes: int,
    width_divisor: int = 1,
    name: str = "resnet20",
    dropout: float | None = None,
    shortcut: str = "projection",
) -> keras.Model:
    """ResNet20 (3 stages x 3 basic blocks, 16/32/64 filters, divided by ``width_divisor``)."""
    dims = check_input(input_shape, num_classes, width_divisor, dropout)
    inputs = keras.Input(tuple(input_shape), name="image")
    x = conv(dims, scaled(STAGES[0], width_divisor), 3, padding="same", name="stem_conv")(inputs)
    x = layers.Activation("relu", name="stem_relu")(_bn("stem_bn")(x))
    for s, filters in enumerate(STAGES, start=1):
        for b in range(1, BLOCKS_PER_STAGE + 1):
            stride = 2 if s > 1 and b == 1 else 1
            x = basic_block(x, dims, scaled(filters, width_divisor), stride, f"s{s}b{b}", shortcut)
    x = global_avg_pool(dims, name="gap")(x)
    if dropout:
        x = layers.Dropout(dropout, name="drop")(x)
    return finish(inputs, head(x, num_classes), name, [])


def build_resnet20a(
    input_shape: Sequence[int],
    num_classes: int,
    width_divisor: int = 1,
    name: str = "resnet20a",
    dropout: float | None = None,
) -> keras.Model:
    """ResNet20 with He et al.'s option-A identity shortcuts (KLW Table 2 exactly)."""
    return build_resnet20(input_shape, num_classes, width_divisor, name, dropout, shortcut="identity")
