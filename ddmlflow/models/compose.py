"""Composition of sub-networks into the global network (Gu, Zhang, Liu & Cai, ETNA 2022, sec. 2.2).

Gu et al. (GC) cut the *width* of a global CNN into N sub-networks (every
width divided by N, depth unchanged), train sub-network k on box k only, then
initialise the global net from them ("sub-network transfer learning"):

* conv / dense kernels are block diagonal, sub k's kernel on channel block k
  (in and out), zero between blocks (eq. 2.12); the first layer reads all
  input channels into block k (eq. 2.11);
* the first dense layer after ``flatten`` reads block k only from the
  activation field of box k in the feature map (eq. 2.13), zero elsewhere;
* the last layer, ``logits``, stacks the sub-networks' kernels over the
  blocks, so the composed logits are the *sum* of the sub logits (eq. 2.14);
  its bias is the sum of the sub biases;
* biases and BatchNormalization parameters/statistics are concatenated
  (both act per channel); residual ``Add`` layers need nothing (GC sec. 2.4).

Theorem 2.1: with valid padding, a complete nonoverlapping decomposition,
boxes on the pooling grid and no global pooling, the composed logits equal
the sum of the sub logits exactly (``theorem_error`` ~ 0). Our paper nets
break the assumptions, so there it holds only approximately and
``theorem_error`` reports by how much:

* same padding: convolutions near a box border see the neighbour's pixels;
* global average pooling (ResNet20, cnn3d): block k's channels are averaged
  over the whole feature map, not just box k's field. We compose the next
  layer unscaled, as GC do for their ResNets (Table 3.3): a factor
  |field| / |box field| would be exact only if block k were zero outside its
  box, which it is not (there it is sub k's filters applied to other boxes);
* overlapping boxes or boxes off the pooling grid: the box's field in the
  feature map is placed at ``round(start / stride)`` (clipped into the map).

Channels no sub-network owns (when N does not divide a width, e.g. 13 type B
boxes) keep the global net's random initial weights on their inputs and get
zero weights towards owned channels and the logits, so they do not change the
composed output but can learn in the further training.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np

from ..errors import InputError, require


def compose(sub_models: Sequence[keras.Model], decomposition, global_model: keras.Model) -> keras.Model:
    """Set ``global_model``'s weights from the N trained sub-networks (in place) and return it.

    ``global_model`` is ``build(model, image_shape, K)``; sub-network i is
    ``build(model, decomposition.input_shape(i), K, width_divisor=N)``. Layers
    are matched by name (every builder names its layers the same way).
    """
    require(len(sub_models) == decomposition.n, "sub_models", len(sub_models),
            f"one sub-network per box ({decomposition.n})")
    require(tuple(global_model.input_shape[1:]) == decomposition.image_shape, "global_model",
            tuple(global_model.input_shape[1:]), f"a net on whole images {decomposition.image_shape}")
    for i, m in enumerate(sub_models):
        require(tuple(m.input_shape[1:]) == decomposition.input_shape(i), "sub_models",
                f"#{i}: input {tuple(m.input_shape[1:])}", f"a net on box {i}: {decomposition.input_shape(i)}")
    require(not any(layer.name.endswith("_pad") for layer in global_model.layers), "model", global_model.name,
            "vgg3, vgg9, resnet20 (projection shortcuts) or cnn3d: option-A zero-padded shortcuts "
            "(resnet20a) do not keep the channel blocks apart")
    first_fc, geometry = _first_fc(global_model, sub_models, decomposition)
    for layer in global_model.layers:
        if not layer.weights:
            continue
        weights = [np.array(w) for w in layer.get_weights()]
        parts = [_sub_layer(m, layer.name).get_weights() for m in sub_models]
        if layer.name == first_fc:  # may be ``logits`` itself when no hidden dense layer follows flatten
            weights = _first_dense(weights, parts, geometry, head=layer.name == "logits")
        elif layer.name == "logits":
            weights = _stack_head(weights, parts)
        else:
            weights = _block_diagonal(weights, parts, layer.name)
        layer.set_weights(weights)
    return global_model


def theorem_error(sub_models: Sequence[keras.Model], composed: keras.Model, decomposition, x: np.ndarray) -> float:
    """max |composed logits - sum of sub logits| on images ``x`` (GC Theorem 2.1, eq. 2.16)."""
    x = np.asarray(x, dtype="float32")
    total = sum(_logits(m, decomposition.crop(x, i)) for i, m in enumerate(sub_models))
    return float(np.max(np.abs(_logits(composed, x) - total)))


def _logits(model: keras.Model, x: np.ndarray) -> np.ndarray:
    head = keras.Model(model.inputs[0], model.get_layer("logits").output)
    return np.asarray(head(np.ascontiguousarray(x), training=False))


def _sub_layer(model: keras.Model, name: str):
    try:
        return model.get_layer(name)
    except ValueError:
        raise InputError("sub_models", model.name, f"every sub-network needs the global net's layer {name!r} "
                         "(build both with the same builder)") from None


def _blocks(sizes: Sequence[int], total: int, what: str) -> list[slice]:
    """Consecutive channel blocks, one per sub-network; they may leave unowned channels at the end."""
    edges = np.cumsum([0, *sizes])
    require(edges[-1] <= total, "sub_models", f"{what}: {list(sizes)}",
            f"sub-network widths must add up to at most the global width {total} (width_divisor = N)")
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _per_channel(weights: list[np.ndarray], parts: list[list[np.ndarray]], outs: list[slice]) -> None:
    """Biases and BatchNormalization vectors: concatenated over the blocks."""
    for j, w in enumerate(weights):
        if w.ndim == 1:
            for p, o in zip(parts, outs):
                w[o] = p[j]


def _block_diagonal(weights, parts, name):
    """Conv or dense kernel: sub k on (in block k, out block k), zero off the diagonal (eq. 2.11-2.12)."""
    kernel = weights[0]
    if kernel.ndim == 1:  # BatchNormalization: gamma, beta, moving mean, moving variance
        _per_channel(weights, parts, _blocks([p[0].shape[0] for p in parts], kernel.shape[0], name))
        return weights
    sub_kernels = [p[0] for p in parts]
    for k in sub_kernels:
        require(k.shape[:-2] == kernel.shape[:-2], "sub_models", f"{name}: kernel {k.shape}",
                f"the global kernel size {kernel.shape[:-2]}")
    outs = _blocks([k.shape[-1] for k in sub_kernels], kernel.shape[-1], f"{name} outputs")
    first = all(k.shape[-2] == kernel.shape[-2] for k in sub_kernels)  # reads the image: all channels
    ins = ([slice(None)] * len(parts) if first
           else _blocks([k.shape[-2] for k in sub_kernels], kernel.shape[-2], f"{name} inputs"))
    for i, o, k in zip(ins, outs, sub_kernels):
        kernel[..., o] = 0.0
        kernel[..., i, o] = k
    _per_channel(weights, parts, outs)
    return weights


def _stack_head(weights, parts):
    """``logits``: sub kernels stacked over the input blocks, biases summed: logits add up (eq. 2.14)."""
    kernel, bias = weights
    kernel[:] = 0.0
    for i, p in zip(_blocks([p[0].shape[0] for p in parts], kernel.shape[0], "logits inputs"), parts):
        kernel[i] = p[0]
    return [kernel, np.sum([p[1] for p in parts], axis=0)]


def _first_fc(global_model, sub_models, decomposition):
    """The dense layer reading ``flatten`` (name), the flatten input shapes (global, subs), box offsets."""
    flat = [layer for layer in global_model.layers if isinstance(layer, keras.layers.Flatten)]
    readers = [layer for layer in global_model.layers if flat and isinstance(layer, keras.layers.Dense)
               and layer.input is flat[0].output]
    if not readers:
        return None, None  # global pooling instead: the next dense layer is plain block diagonal
    field = tuple(int(s) for s in flat[0].input.shape[1:])  # (spatial..., channels)
    sub_fields = [tuple(int(s) for s in _sub_layer(m, flat[0].name).input.shape[1:]) for m in sub_models]
    stride = np.ones(len(field) - 1, dtype=int)
    for layer in global_model.layers:  # downsampling up to flatten: conv and pooling strides
        if layer is flat[0]:
            break
        stride *= np.asarray(getattr(layer, "strides", 1), dtype=int)
    regions = []
    for box, f in zip(decomposition.boxes, sub_fields):
        off = (int(np.clip(round(a / s), 0, g - n)) for a, s, g, n in zip(box.start, stride, field, f))
        regions.append(tuple(slice(o, o + n) for o, n in zip(off, f[:-1])))
    return readers[0].name, (field, sub_fields, regions)


def _first_dense(weights, parts, geometry, head: bool = False):
    """Block k reads only (box k's field in the feature map) x (channel block k) (eq. 2.13).

    As the ``logits`` layer (``head``) every sub-network writes all outputs, which add up.
    """
    field, sub_fields, regions = geometry
    kernel = weights[0]
    grid = kernel.reshape(*field, kernel.shape[-1])  # Flatten is row-major over (spatial..., channels)
    chans = _blocks([f[-1] for f in sub_fields], field[-1], "flatten channels")
    outs = ([slice(None)] * len(parts) if head
            else _blocks([p[0].shape[-1] for p in parts], kernel.shape[-1], "first dense outputs"))
    for o in outs:
        grid[..., o] = 0.0
    for c, o, region, f, p in zip(chans, outs, regions, sub_fields, parts):
        grid[region + (c, o)] = p[0].reshape(*f, p[0].shape[-1])
    if head:
        return [grid.reshape(kernel.shape), np.sum([p[1] for p in parts], axis=0)]
    _per_channel(weights, parts, outs)
    return [grid.reshape(kernel.shape), *weights[1:]]
