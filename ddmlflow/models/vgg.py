"""VGG-type CNNs of Klawonn, Lanser & Weber (KLW): VGG3 and VGG9, 2D or 3D.

Stacks of same-padded 3x3 (3x3x3) ReLU convolutions, each stack followed by
2x max pooling and dropout; flatten; ReLU dense layers; ``logits`` + ``probs``.
Local nets divide every width (filters and dense units, not the output) by
``width_divisor`` (KLW: 2; Gu et al.: the number of parts).

VGG3 (KLW sec. 4.1): stacks {32,32},{64,64},{128,128}, dropout 0.2, dense 128.
It reproduces KLW Table 2 exactly: 550,570 params on CIFAR-10, 89,178 for a
2x2 local net (16x16, half width).

VGG9 (KLW-TL sec. 3.1: "nine blocks of stacks of convolutional layers", 3x3
kernels) is not spelled out in the papers. A search over VGG-like nets for
KLW Table 2's counts found exactly one plain match for both global nets:
stacks {32,32},{64,64},{128,128},{256,256},{512,512}, each pooled, dense
128 -> 64 -> K:

    CIFAR-10 (32x32x3, K=10):    4,786,794 params (Table 2: 4.7868M)
    TF-Flowers (180x180x3, K=5): 6,359,333 params (Table 2: 6.3593M)

That is what ``build_vgg9`` builds for the global net. KLW's local nets are not
this net at half width: Table 2's locals (1.1959M CIFAR 16x16, 1.3266M Flowers
60x60, 0.0851 / 1.0736 "MFLOPs") are matched exactly, and only, by all conv
widths divided, *four* poolings (the fifth is dropped) and a *single* hidden
dense layer of 128 / ``width_divisor`` = 64 units (the second dense layer is
dropped): 1,195,866 and 1,326,613 params. So ``build_vgg9`` builds that form
whenever ``width_divisor > 1`` (``klw_local=True``, the default). Gu et al.'s
sub-networks must be the global net at 1/N width (composition matches layers
one to one), so ``compose`` builds them with ``klw_local=False``.
The dropout rate of VGG9 is not given; we use VGG3's 0.2.

Nor is its initialisation. With Keras' default (Glorot uniform) a plain 10-layer ReLU stack shrinks
the signal at every layer; the local form (16x16 boxes pooled down to 1x1) then often collapses to a
constant output in its first epoch, its ReLUs dead, and never learns (README, "Results at the cpu
budget"). VGG9's ReLU layers therefore start from He uniform, the initialisation made for ReLU
stacks; VGG3 (six layers, which trains from Glorot as KLW report) keeps Keras' default.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from .layers import check_input, conv, finish, head, pool_adapted, scaled

VGG3_STACKS = ((32, 32), (64, 64), (128, 128))
VGG3_DENSE = (128,)
VGG9_STACKS = ((32, 32), (64, 64), (128, 128), (256, 256), (512, 512))
VGG9_DENSE = (128, 64)
VGG9_LOCAL_DENSE = (128,)  # divided by width_divisor: 64 units at KLW's half width
VGG9_LOCAL_POOLS = 4
VGG9_INIT = "he_uniform"  # see the module docstring
DROPOUT = 0.2


def build_vgg(
    input_shape: Sequence[int],
    num_classes: int,
    stacks: Sequence[Sequence[int]],
    dense: Sequence[int],
    width_divisor: int = 1,
    dropout: float | None = None,
    name: str = "vgg",
    pools: int | None = None,
    init: str = "glorot_uniform",
) -> keras.Model:
    """A VGG net from its conv ``stacks`` (filters per layer) and hidden ``dense`` units.

    The first ``pools`` stacks (default: all) end in a 2x max pooling, the others do not;
    ``init`` initialises the ReLU layers' kernels (the logits keep Keras' default).
    """
    dims = check_input(input_shape, num_classes, width_divisor, dropout)
    rate = DROPOUT if dropout is None else dropout
    adaptations: list[str] = []
    inputs = keras.Input(tuple(input_shape), name="image")
    x = inputs
    for s, stack in enumerate(stacks, start=1):
        for i, filters in enumerate(stack, start=1):
            f = scaled(filters, width_divisor)
            x = conv(dims, f, 3, padding="same", activation="relu", kernel_initializer=init, name=f"conv{s}_{i}")(x)
        if pools is None or s <= pools:
            x = pool_adapted(x, f"pool{s}", adaptations)
        x = layers.Dropout(rate, name=f"drop{s}")(x)
    x = layers.Flatten(name="flatten")(x)
    for d, units in enumerate(dense, start=1):
        x = layers.Dense(scaled(units, width_divisor), activation="relu", kernel_initializer=init, name=f"dense{d}")(x)
    return finish(inputs, head(x, num_classes), name, adaptations)


def build_vgg3(
    input_shape: Sequence[int],
    num_classes: int,
    width_divisor: int = 1,
    name: str = "vgg3",
    dropout: float | None = None,
) -> keras.Model:
    """KLW's VGG3 (sec. 4.1); its local nets are the global net at 1/``width_divisor`` width."""
    return build_vgg(input_shape, num_classes, VGG3_STACKS, VGG3_DENSE, width_divisor, dropout, name)


def build_vgg9(
    input_shape: Sequence[int],
    num_classes: int,
    width_divisor: int = 1,
    name: str = "vgg9",
    dropout: float | None = None,
    klw_local: bool = True,
) -> keras.Model:
    """KLW-TL's VGG9, reconstructed from KLW Table 2 (see the module docstring).

    With ``width_divisor > 1`` and ``klw_local``: KLW's local form (four poolings,
    one hidden dense layer); else the global net with every width divided.
    """
    if width_divisor > 1 and klw_local:
        return build_vgg(
            input_shape,
            num_classes,
            VGG9_STACKS,
            VGG9_LOCAL_DENSE,
            width_divisor,
            dropout,
            name,
            pools=VGG9_LOCAL_POOLS,
            init=VGG9_INIT,
        )
    return build_vgg(input_shape, num_classes, VGG9_STACKS, VGG9_DENSE, width_divisor, dropout, name, init=VGG9_INIT)
