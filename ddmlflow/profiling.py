"""Parameter count, FLOPs and time to evaluate a network (KLW Table 2).

FLOPs are counted as the paper counted them, with model-profiler 1.1.8 (KLW ref. [2])
at batch size 1: a dense layer costs ``2 * n_in * n_out + n_out``, a convolution
``2 * kh * kw * c_in * c_out * h_out * w_out + c_out`` (2 FLOPs per multiply-add, the
bias added once per output channel); every other layer costs 0. model-profiler reads
Keras 2 attributes (``layer.output_shape``, ``layer.input_shape``) that Keras 3 layers
no longer have, so we hand its per-layer counters a small stand-in carrying them.

model-profiler applies that 2D formula to ``Conv3D`` too: it reads axes 1, 2 of the
5D output as the positions, axis 3 (the third spatial size, not the channels) as
``c_in``/``c_out``, and ignores the kernel depth. The paper's 3D CNN numbers (chest CT,
11.9684 "MFLOPs") are exactly this, so ``flops(model)`` reproduces it; pass
``exact=True`` for the same convention applied over every spatial axis, which is what
a 3D convolution really costs (identical for 2D nets). The one Table 2 entry we do not
reproduce is the 3D local net (2x2x1: paper 0.8069, model-profiler 2.8867, exact 19.7993
with the parameter count matching); we found no plausible input size that gives 0.8069.

model-profiler's "MFLOPs" are units of 1e8 FLOPs (its ``multiplier['MFLOPs']``), hence
``paper_mflops``. The paper's "# params" column is ``model.count_params()``, batch-norm
moving statistics included (3D CNN global 1.3529M).
"""
from __future__ import annotations

import math
import time
from types import SimpleNamespace

import keras
import numpy as np

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


def _exact_conv(layer, in_shape: tuple, out_shape: tuple) -> int:
    """model-profiler's conv formula over all spatial axes (right for 3D)."""
    macs = math.prod(layer.kernel_size) * in_shape[-1] // layer.groups * out_shape[-1]
    bias = out_shape[-1] if layer.use_bias else 0
    return 2 * macs * math.prod(out_shape[1:-1]) + bias


def layer_flops(layer, exact: bool = False) -> int:
    """FLOPs of one layer for one sample, in model-profiler's convention."""
    if not isinstance(layer, (keras.layers.Dense, *_CONVS)):
        return 0
    in_shape, out_shape = _shape(layer.input), _shape(layer.output)
    if isinstance(layer, _CONVS) and exact:
        return _exact_conv(layer, in_shape, out_shape)
    from model_profiler import utils as mp  # imported late: it pulls in TF's legacy Keras

    # What model-profiler expects of a Keras 2 layer, for a Keras 3 one.
    keras2 = SimpleNamespace(input_shape=in_shape, output_shape=out_shape, get_config=layer.get_config)
    count = mp.count_linear if isinstance(layer, keras.layers.Dense) else mp.count_conv2d
    return int(count(keras2))


def flops(model: keras.Model, exact: bool = False) -> int:
    """FLOPs of one forward pass at batch size 1 (KLW Table 2 convention, see module doc)."""
    return sum(layer_flops(layer, exact) for layer in _layers(model))


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
    """Table 2 row of ``model``: params, FLOPs and time to evaluate a random batch."""
    x = np.random.default_rng(0).random((batch_size, *model.input_shape[1:]), dtype="float32")
    n_flops = flops(model)
    return {"params": total_params(model), "trainable_params": trainable_params(model),
            "flops": n_flops, "flops_exact": flops(model, exact=True),
            "paper_mflops": paper_mflops(n_flops), "tteval_ms": tteval_ms(model, x, repeats)}


def profile_preset(name: str, repeats: int = 3) -> dict[str, dict]:
    """Profiles of a preset's global net and of the local net of its first box."""
    from . import models, presets
    from .decomposition import make

    p = presets.get(name)
    boxes = make(p.decomposition, p.image_shape, p.overlap)
    nets = {"global": models.build(p.model, p.image_shape, p.num_classes, name="global"),
            "local": models.build(p.model, boxes.input_shape(0), p.num_classes,
                                  width_divisor=p.width_divisor, name="local_00")}
    return {k: profile(net, batch_size=p.batch_size, repeats=repeats) for k, net in nets.items()}
