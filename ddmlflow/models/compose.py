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

"Block k" is a set of global channels, not necessarily consecutive: a
*channel map* gives, per global width, the global index of each of sub k's
channels. It is consecutive blocks everywhere except after He et al.'s
option-A shortcuts (``resnet20a``): there the global shortcut keeps channel j
at j and appends zero channels, so sub k's channels at the wider stage are
its old channels (where the shortcut puts them) followed by its share of the
appended zero channels. With that map every global layer is again block
diagonal, the shortcut adds exactly what each sub's shortcut adds, and
Theorem 2.1 stays exact. It needs N x (sub width growth) <= global width
growth at every padding (resnet20a: N = 2, 4, 5, 8, 13-16, i.e. 2x2, 4x4 and
type B, not 3x3); otherwise ``check`` fails before any training.

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

from collections.abc import Sequence

import keras
import numpy as np

from ..errors import InputError, require
from .resnet import ChannelPad


def compose(sub_models: Sequence[keras.Model], decomposition, global_model: keras.Model) -> keras.Model:
    """Set ``global_model``'s weights from the N trained sub-networks (in place) and return it.

    ``global_model`` is ``build(model, image_shape, K)``; sub-network i is
    ``build(model, decomposition.input_shape(i), K, width_divisor=N, klw_local=False)``.
    Layers are matched by name (every builder names its layers the same way).
    """
    maps, first_fc, geometry = _plan(sub_models, decomposition, global_model)
    for layer in global_model.layers:
        if not layer.weights:
            continue
        weights = [np.array(w) for w in layer.get_weights()]
        parts = [_sub_layer(m, layer.name).get_weights() for m in sub_models]
        if layer.name == first_fc:  # may be ``logits`` itself when no hidden dense layer follows flatten
            weights = _first_dense(weights, parts, geometry, maps, head=layer.name == "logits")
        elif layer.name == "logits":
            weights = _stack_head(weights, parts, maps)
        else:
            weights = _block_diagonal(weights, parts, layer.name, maps)
        layer.set_weights(weights)
    return global_model


def check(sub_models: Sequence[keras.Model], decomposition, global_model: keras.Model) -> None:
    """Raise ``InputError`` unless ``compose`` can compose these nets (cheap: no weights copied).

    Call it with freshly built nets before training the sub-networks.
    """
    _plan(sub_models, decomposition, global_model)


def _plan(sub_models, decomposition, global_model):
    """Validated inputs -> (channel maps, name of the dense layer reading ``flatten``, its geometry)."""
    require(
        len(sub_models) == decomposition.n,
        "sub_models",
        len(sub_models),
        f"one sub-network per box ({decomposition.n})",
    )
    require(
        tuple(global_model.input_shape[1:]) == decomposition.image_shape,
        "global_model",
        tuple(global_model.input_shape[1:]),
        f"a net on whole images {decomposition.image_shape}",
    )
    for i, m in enumerate(sub_models):
        require(
            tuple(m.input_shape[1:]) == decomposition.input_shape(i),
            "sub_models",
            f"#{i}: input {tuple(m.input_shape[1:])}",
            f"a net on box {i}: {decomposition.input_shape(i)}",
        )
    for layer in global_model.layers:
        if layer.weights:
            _sub_layer(sub_models[0], layer.name)
    maps = _padded_maps(global_model, sub_models)
    first_fc, geometry = _first_fc(global_model, sub_models, decomposition)
    return maps, first_fc, geometry


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
        raise InputError(
            "sub_models",
            model.name,
            f"every sub-network needs the global net's layer {name!r} "
            "(build both with the same builder; sub-networks with klw_local=False)",
        ) from None


def _blocks(sizes: Sequence[int], total: int, what: str) -> list[slice]:
    """Consecutive channel blocks, one per sub-network; they may leave unowned channels at the end."""
    edges = np.cumsum([0, *sizes])
    require(
        edges[-1] <= total,
        "sub_models",
        f"{what}: {list(sizes)}",
        f"sub-network widths must add up to at most the global width {total} (width_divisor = N)",
    )
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _channel_map(maps: dict, total: int, sizes: Sequence[int], what: str) -> list[np.ndarray]:
    """Global channel indices of each sub's channels at global width ``total`` (default: consecutive blocks)."""
    if total not in maps:
        maps[total] = [np.arange(b.start, b.stop) for b in _blocks(sizes, total, what)]
    got = [len(m) for m in maps[total]]
    require(
        got == list(sizes),
        "sub_models",
        f"{what}: widths {list(sizes)}",
        f"the widths {got} of the sub-networks' other layers of global width {total}",
    )
    return maps[total]


def _padded_maps(global_model, sub_models) -> dict:
    """Channel maps through option-A shortcuts: old channels stay, each sub gets its share of the new zeros."""
    maps: dict[int, list[np.ndarray]] = {}
    for layer in global_model.layers:
        if not isinstance(layer, ChannelPad):
            continue
        subs = [_sub_layer(m, layer.name) for m in sub_models]
        width, extras = int(layer.input.shape[-1]), [s.extra for s in subs]
        old = _channel_map(maps, width, [int(s.input.shape[-1]) for s in subs], f"{layer.name} inputs")
        require(
            sum(extras) <= layer.extra,
            "decomposition",
            f"{len(subs)} boxes",
            f"{layer.name}: the sub-networks pad {sum(extras)} zero channels, the global net only "
            f"{layer.extra}; option-A shortcuts (resnet20a) compose for N = 2, 4, 5, 8, 13-16 boxes "
            "(2x2, 4x4, type B), model=resnet20 (projection shortcuts) for any N",
        )
        edges = width + np.cumsum([0, *extras])
        new = [np.concatenate([o, np.arange(a, b)]) for o, a, b in zip(old, edges[:-1], edges[1:])]
        wider = width + layer.extra
        require(
            wider not in maps or all(np.array_equal(a, b) for a, b in zip(maps[wider], new)),
            "model",
            global_model.name,
            f"one channel order per width; {layer.name} pads to a width used before",
        )
        maps[wider] = new
    return maps


def _per_channel(weights: list[np.ndarray], parts: list[list[np.ndarray]], outs: list[np.ndarray]) -> None:
    """Biases and BatchNormalization vectors: concatenated over the blocks."""
    for j, w in enumerate(weights):
        if w.ndim == 1:
            for p, o in zip(parts, outs):
                w[o] = p[j]


def _block_diagonal(weights, parts, name, maps):
    """Conv or dense kernel: sub k on (in block k, out block k), zero off the diagonal (eq. 2.11-2.12)."""
    kernel = weights[0]
    if kernel.ndim == 1:  # BatchNormalization: gamma, beta, moving mean, moving variance
        _per_channel(weights, parts, _channel_map(maps, kernel.shape[0], [p[0].shape[0] for p in parts], name))
        return weights
    sub_kernels = [p[0] for p in parts]
    for k in sub_kernels:
        require(
            k.shape[:-2] == kernel.shape[:-2],
            "sub_models",
            f"{name}: kernel {k.shape}",
            f"the global kernel size {kernel.shape[:-2]}",
        )
    outs = _channel_map(maps, kernel.shape[-1], [k.shape[-1] for k in sub_kernels], f"{name} outputs")
    first = all(k.shape[-2] == kernel.shape[-2] for k in sub_kernels)  # reads the image: all channels
    ins = (
        [np.arange(kernel.shape[-2])] * len(parts)
        if first
        else _channel_map(maps, kernel.shape[-2], [k.shape[-2] for k in sub_kernels], f"{name} inputs")
    )
    for o in outs:
        kernel[..., o] = 0.0
    for i, o, k in zip(ins, outs, sub_kernels):
        kernel[..., i[:, None], o[None, :]] = k
    _per_channel(weights, parts, outs)
    return weights


def _stack_head(weights, parts, maps):
    """``logits``: sub kernels stacked over the input blocks, biases summed: logits add up (eq. 2.14)."""
    kernel, bias = weights
    kernel[:] = 0.0
    for i, p in zip(_channel_map(maps, kernel.shape[0], [p[0].shape[0] for p in parts], "logits inputs"), parts):
        kernel[i] = p[0]
    return [kernel, np.sum([p[1] for p in parts], axis=0)]


def _strides_to(tensor) -> np.ndarray:
    """Product of the strides (convolutions, poolings) on the path from the input to ``tensor``.

    Follows each layer's first input, so a residual block counts its stride once.
    """
    stride = np.ones(len(tensor.shape) - 2, dtype=int)
    while True:
        op, node_index, _ = tensor._keras_history
        if isinstance(op, keras.layers.InputLayer):
            return stride
        stride *= np.asarray(getattr(op, "strides", 1), dtype=int)
        tensor = op._inbound_nodes[node_index].input_tensors[0]


def _first_fc(global_model, sub_models, decomposition):
    """The dense layer reading ``flatten`` (name), the flatten input shapes (global, subs), box offsets."""
    flat = [layer for layer in global_model.layers if isinstance(layer, keras.layers.Flatten)]
    readers = [
        layer
        for layer in global_model.layers
        if flat and isinstance(layer, keras.layers.Dense) and layer.input is flat[0].output
    ]
    if not readers:
        return None, None  # global pooling instead: the next dense layer is plain block diagonal
    field = tuple(int(s) for s in flat[0].input.shape[1:])  # (spatial..., channels)
    sub_fields = [tuple(int(s) for s in _sub_layer(m, flat[0].name).input.shape[1:]) for m in sub_models]
    stride = _strides_to(flat[0].input)  # downsampling up to flatten
    regions = []
    for box, f in zip(decomposition.boxes, sub_fields):
        off = (int(np.clip(round(a / s), 0, g - n)) for a, s, g, n in zip(box.start, stride, field, f))
        regions.append(tuple(slice(o, o + n) for o, n in zip(off, f[:-1])))
    return readers[0].name, (field, sub_fields, regions)


def _first_dense(weights, parts, geometry, maps, head: bool = False):
    """Block k reads only (box k's field in the feature map) x (channel block k) (eq. 2.13).

    As the ``logits`` layer (``head``) every sub-network writes all outputs, which add up.
    """
    field, sub_fields, regions = geometry
    kernel = weights[0]
    grid = kernel.reshape(*field, kernel.shape[-1])  # Flatten is row-major over (spatial..., channels)
    chans = _channel_map(maps, field[-1], [f[-1] for f in sub_fields], "flatten channels")
    outs = (
        [np.arange(kernel.shape[-1])] * len(parts)
        if head
        else _channel_map(maps, kernel.shape[-1], [p[0].shape[-1] for p in parts], "first dense outputs")
    )
    for o in outs:
        grid[..., o] = 0.0
    for c, o, region, f, p in zip(chans, outs, regions, sub_fields, parts):
        grid[region + (c[:, None], o[None, :])] = p[0].reshape(*f, p[0].shape[-1])
    if head:
        return [grid.reshape(kernel.shape), np.sum([p[1] for p in parts], axis=0)]
    _per_channel(weights, parts, outs)
    return [grid.reshape(kernel.shape), *weights[1:]]
