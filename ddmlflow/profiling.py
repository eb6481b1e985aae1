"""Parameter count, FLOPs and time to evaluate a network (KLW Table 2).

Two FLOP counts, one forward pass at batch size 1:

* ``flops`` / ``paper_mflops`` -- the paper's count, as KLW made it, with model-profiler
  1.1.8 (KLW ref. [2]): a dense layer costs ``2 * n_in * n_out + n_out``, a convolution
  ``2 * kh * kw * c_in * c_out * h_out * w_out + c_out`` (the bias once per channel);
  every other layer costs 0. model-profiler reads Keras 2 attributes (``output_shape``,
  ``input_shape``) that Keras 3 layers lack, so we hand its counters a stand-in carrying
  them. On ``Conv3D`` it applies the same 2D formula to the 5D shapes: axes 1, 2 as the
  positions, axis 3 (the third *spatial* size) as ``c_in``/``c_out``, kernel depth and
  channels ignored. That is physically wrong, but it is what Table 2 reports: the 3D global
  net's 11.9684 is reproduced exactly. ``paper_mflops`` is in model-profiler's "MFLOPs",
  which are units of 1e8 FLOPs (its ``multiplier['MFLOPs']``), = Table 2's unit.
* ``flops_exact`` -- what the layers really compute, in one stated convention: 2 FLOPs per
  multiply-add of every convolution and dense layer (every kernel tap at every output
  position, zero padding included, groups respected; for Conv3D all three spatial axes,
  the kernel depth and the channels), plus 1 FLOP per output element for the bias.
  Element-wise layers (activations, batch norm, pooling, residual adds) are not counted.
  For 2D nets this differs from model-profiler only by the bias (per output element
  instead of per channel, < 1 %); for 3D it is the real cost (CT global 32.52 GFLOPs,
  2x2x1 local 1.99 GFLOPs, against model-profiler's 1.20 and 0.29 GFLOPs).

KLW Table 2 entries reproduced exactly (params and paper MFLOPs): every 2D row (VGG3,
VGG9, ResNet20 as ``resnet20a``), except the VGG3 global parameter counts on TF-Flowers
and Yale B (8,217,637 vs 8.2178M; 8,548,998 vs 8.5499M; FLOPs match, the gap is not
explained by any layer choice we found), and the 3D global row. Not reproducible: the
3D local entry (2x2x1, paper 0.8069 MFLOPs): the parameter count matches (0.3396M), but
model-profiler gives 2.8867 (the real cost is 19.8845 in the same unit); no natural
box shape gives 0.8069 with model-profiler's formula. The paper's "# params" column is
``model.count_params()``, batch-norm moving statistics included (3D CNN global 1.3529M).
"""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import keras
import numpy as np

from . import models, presets
from .decomposition import make

_CONVS = (keras.layers.Conv2D, keras.layers.Conv3D)


def total_params(model: keras.Model) -> int:
    """All weights, trainable or not (the paper's "# params")."""
    return int(model.count_params())


def trainable_params(model: keras.Model) -> int:
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def _shape(tensor) -> tuple:
    return tuple(None if s is None else int(s) for s in tensor.shape)


def _layers(model: keras.Model):
    """Leaf layers of ``model``, nested models expanded (model-profiler looks inside them too)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def layer_flops(layer) -> int:
    """FLOPs of one layer for one sample as model-profiler counts them (the paper's count)."""
    if not isinstance(layer, (keras.layers.Dense, *_CONVS)):
        return 0
    from model_profiler import utils as mp  # imported late: it pulls in TF's legacy Keras

    # What model-profiler expects of a Keras 2 layer, for a Keras 3 one.
    keras2 = SimpleNamespace(
        input_shape=_shape(layer.input), output_shape=_shape(layer.output), get_config=layer.get_config
    )
    count = mp.count_linear if isinstance(layer, keras.layers.Dense) else mp.count_conv2d
    return int(count(keras2))


def layer_flops_exact(layer) -> int:
    """FLOPs one layer really computes for one sample (convention in the module docstring)."""
    if not isinstance(layer, (keras.layers.Dense, *_CONVS)):
        return 0
    in_shape, out_shape = _shape(layer.input), _shape(layer.output)
    positions = math.prod(out_shape[1:-1])  # output positions (1 for a dense layer on a vector)
    if isinstance(layer, keras.layers.Dense):
        macs_per_position = in_shape[-1] * out_shape[-1]
    else:
        macs_per_position = math.prod(layer.kernel_size) * (in_shape[-1] // layer.groups) * out_shape[-1]
    bias = out_shape[-1] if layer.use_bias else 0
    return positions * (2 * macs_per_position + bias)


def flops(model: keras.Model) -> int:
    """The paper's FLOPs of one forward pass at batch size 1 (model-profiler's count)."""
    return sum(layer_flops(layer) for layer in _layers(model))


def flops_exact(model: keras.Model) -> int:
    """The real FLOPs of one forward pass at batch size 1 (2 per multiply-add, plus biases)."""
    return sum(layer_flops_exact(layer) for layer in _layers(model))


def paper_mflops(n_flops: int) -> float:
    """The unit of KLW Table 2's "MFLOPs" column: 1e8 FLOPs (model-profiler's), 4 decimals."""
    return round(n_flops / 1e8, 4)


def tteval_ms(model: keras.Model, x: np.ndarray, repeats: int = 10) -> float:
    """Mean wall time in ms of one inference call on batch ``x``, after one warm-up call."""
    np.asarray(model(x, training=False))  # warm-up: tracing, allocation
    t0 = time.perf_counter()
    for _ in range(repeats):
        np.asarray(model(x, training=False))  # asarray waits for the result
    return (time.perf_counter() - t0) / repeats * 1e3


def profile(model: keras.Model, batch_size: int = 32, repeats: int = 5) -> dict:
    """Table 2 row of ``model``: params, FLOPs (paper's and real) and time to evaluate a random batch.

    ``flops`` and ``paper_mflops`` are the paper's count, ``flops_exact`` the real one.
    """
    x = np.random.default_rng(0).random((batch_size, *model.input_shape[1:]), dtype="float32")
    n_flops = flops(model)
    return {
        "params": total_params(model),
        "trainable_params": trainable_params(model),
        "flops": n_flops,
        "flops_exact": flops_exact(model),
        "paper_mflops": paper_mflops(n_flops),
        "tteval_ms": tteval_ms(model, x, repeats),
    }


def profile_preset(name: str, repeats: int = 3) -> dict[str, dict]:
    """Profiles of a preset's global net and of the local net of its first box."""
    p = presets.get(name)
    boxes = make(p.decomposition, p.image_shape, p.overlap)
    nets = {
        "global": models.build(p.model, p.image_shape, p.num_classes, name="global"),
        "local": models.build(
            p.model, boxes.input_shape(0), p.num_classes, width_divisor=p.width_divisor, name="local_00"
        ),
    }
    return {k: profile(net, batch_size=p.batch_size, repeats=repeats) for k, net in nets.items()}
