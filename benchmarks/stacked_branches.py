"""N equal-shaped local nets as stacked tensors vs the packed engine's N Keras nets: time of one training step.

    python benchmarks/stacked_branches.py --preset ct-3d-4x4x2 --image-size 64,64,32 --json

The packed engine (``packed_training.make_train_epoch``) runs N Keras nets side by side: per step
~1,400 small ops per 3D local (forward, backward, one Adam update per variable). Here the same N
nets (``models.build`` of the preset's boxes, which must all have one shape) become stacked
variables ``[N, ...]``, so one op serves all branches:

* convolution: im2col (pad, k^d strided slices, concat) then one batched matmul with the per-branch
  kernels ``[N, k^d * C, C_out]``;
* pooling: the branches folded into the batch axis (one ``max_pool``);
* batch normalisation, global pooling, dense, dropout: per-branch axes of one tensor;
* Adam: one update per stacked variable (the update is elementwise, so a branch's slice follows
  exactly its own Adam);

and the loss is the sum of the N branch losses, as in the packed step. Variants (``--variants``):
``packed`` (the engine as it is), ``packed_xla`` (its step jit-compiled), ``stacked``,
``stacked_xla``. Each is timed over ``--steps`` steps after a warm-up, ``--rounds`` times in turn;
medians, ratios to ``packed`` and the forward difference stacked vs Keras are printed as JSON.
Figures: benchmarks/README.md ("32 small 3D locals: profile").
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _im2col_conv(x: Any, kernel: Any, bias: Any, padding: str) -> Any:
    """``x`` [N, B, *S, C], ``kernel`` [N, *k, C, O] (Keras' layout), stride 1 -> [N, B, *S', O]."""
    import tensorflow as tf

    ks = kernel.shape[1:-2]
    if padding == "same":
        pads = [[0, 0], [0, 0]] + [[(k - 1) // 2, k // 2] for k in ks] + [[0, 0]]
        x = tf.pad(x, pads)
    spatial = x.shape[2:-1]
    out = [s - k + 1 for s, k in zip(spatial, ks)]
    cols = []
    for off in itertools.product(*[range(k) for k in ks]):  # Keras' kernel order: offsets major, then C_in
        idx = (slice(None), slice(None)) + tuple(slice(o, o + n) for o, n in zip(off, out)) + (slice(None),)
        cols.append(x[idx])
    patches = tf.concat(cols, axis=-1) if len(cols) > 1 else cols[0]
    n, c = kernel.shape[0], patches.shape[-1]
    flat = tf.reshape(patches, [n, -1, c])
    w = tf.reshape(kernel, [n, c, kernel.shape[-1]])
    y = tf.matmul(flat, w) + bias[:, None, :]
    return tf.reshape(y, [n, -1, *out, kernel.shape[-1]])


class Stacked:
    """The N Keras nets' layers as stacked variables; ``loss(x, y)`` is the sum of their losses."""

    def __init__(self, nets: list[Any], seed: int = 0) -> None:
        import tensorflow as tf

        self.layers = nets[0].layers
        self.weights: list[Any] = []
        self.slots: dict[str, list[Any]] = {}
        self.n = len(nets)
        for li, layer in enumerate(self.layers):
            stacked = [np.stack([net.layers[li].weights[j].numpy() for net in nets]) for j in range(len(layer.weights))]
            self.slots[layer.name] = [
                tf.Variable(s, trainable=layer.weights[j].trainable) for j, s in enumerate(stacked)
            ]
        self.trainable = [v for vs in self.slots.values() for v in vs if v.trainable]
        self.seed = tf.Variable([seed, 0], dtype=tf.int64)

    def forward(self, x: Any, training: bool) -> Any:
        import tensorflow as tf

        for layer in self.layers:
            kind, w = type(layer).__name__, self.slots[layer.name]
            if kind == "InputLayer":
                continue
            if kind.startswith("Conv"):
                x = _im2col_conv(x, w[0], w[1], layer.padding)
                x = tf.nn.relu(x) if layer.activation.__name__ == "relu" else x
            elif kind.startswith("MaxPooling"):
                shape = tf.shape(x)
                folded = tf.reshape(x, tf.concat([[-1], shape[2:]], 0))
                pool = list(layer.pool_size)
                pooled = tf.nn.max_pool(folded, pool, pool, "VALID")
                x = tf.reshape(pooled, tf.concat([shape[:2], tf.shape(pooled)[1:]], 0))
            elif kind == "BatchNormalization":
                gamma, beta, mean_v, var_v = w
                axes = list(range(1, len(x.shape) - 1))
                bshape = [self.n] + [1] * (len(x.shape) - 2) + [x.shape[-1]]
                if training:
                    mean, var = tf.nn.moments(x, axes)
                    m = layer.momentum
                    mean_v.assign(mean_v * m + mean * (1 - m))
                    var_v.assign(var_v * m + var * (1 - m))
                else:
                    mean, var = mean_v, var_v
                x = tf.nn.batch_normalization(
                    x, *(tf.reshape(t, bshape) for t in (mean, var, beta, gamma)), layer.epsilon
                )
            elif kind.startswith("GlobalAveragePooling"):
                x = tf.reduce_mean(x, axis=list(range(2, len(x.shape) - 1)))
            elif kind == "Flatten":
                x = tf.reshape(x, [self.n, tf.shape(x)[1], -1])
            elif kind == "Dense":
                x = tf.matmul(x, w[0]) + w[1][:, None, :]
                act = layer.activation.__name__
                x = tf.nn.relu(x) if act == "relu" else x
            elif kind == "Dropout":
                if training and layer.rate > 0:
                    self.seed.assign_add([0, 1])
                    keep = tf.random.stateless_uniform(tf.shape(x), self.seed) >= layer.rate
                    x = tf.where(keep, x / (1 - layer.rate), 0.0)
            elif kind == "Activation":
                x = tf.sigmoid(x) if x.shape[-1] == 1 else tf.nn.softmax(x)
            else:
                raise NotImplementedError(kind)
        return x

    def loss(self, x: Any, y: Any, training: bool = True) -> Any:
        import tensorflow as tf

        p = self.forward(x, training)
        yb = tf.broadcast_to(tf.cast(y, tf.float32)[None, :], [self.n, tf.shape(y)[0]])
        if p.shape[-1] == 1:
            p = tf.clip_by_value(p[..., 0], 1e-7, 1 - 1e-7)
            per = -(yb * tf.math.log(p) + (1 - yb) * tf.math.log(1 - p))
        else:
            idx = tf.cast(yb, tf.int32)
            per = -tf.math.log(tf.clip_by_value(tf.gather(p, idx, axis=2, batch_dims=2), 1e-7, 1.0))
        return tf.reduce_sum(tf.reduce_mean(per, axis=1))


def _stacked_step(model: Stacked, lr: float, xla: bool) -> Any:
    import tensorflow as tf

    m = [tf.Variable(tf.zeros_like(v)) for v in model.trainable]
    v2 = [tf.Variable(tf.zeros_like(v)) for v in model.trainable]
    t = tf.Variable(0.0)
    b1, b2, eps = 0.9, 0.999, 1e-7

    def step(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = model.loss(x, y)
        grads = tape.gradient(loss, model.trainable)
        t.assign_add(1.0)
        alpha = lr * tf.sqrt(1 - b2**t) / (1 - b1**t)
        for var, g, mm, vv in zip(model.trainable, grads, m, v2):
            mm.assign_add((g - mm) * (1 - b1))
            vv.assign_add((tf.square(g) - vv) * (1 - b2))
            var.assign_sub(mm * alpha / (tf.sqrt(vv) + eps))
        return loss

    return tf.function(step, jit_compile=xla)


def _packed_step(branches: list[Any], xla: bool) -> Any:
    """The engine's per-batch step (``make_train_epoch``'s body) as its own function."""
    import tensorflow as tf

    def step(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            preds = [b.net(x[b.crop], training=True) for b in branches]
            losses = [b.net.compute_loss(x=None, y=y, y_pred=p, training=True) for b, p in zip(branches, preds)]
            total = tf.add_n(losses)
        weights = [b.net.trainable_weights for b in branches]
        grads = tape.gradient(total, weights)
        for b, g, w in zip(branches, grads, weights):
            b.net.optimizer.apply_gradients(zip(g, w))
        return total

    return tf.function(step, jit_compile=xla)


def _time(fn: Any, batches: list[tuple[Any, Any]], steps: int) -> float:
    fn(*batches[0])  # trace + warm-up
    t0 = time.perf_counter()
    for i in range(steps):
        fn(*batches[i % len(batches)])
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="ct-3d-4x4x2")
    ap.add_argument("--decomposition", default=None)
    ap.add_argument("--image-size", type=lambda s: [int(v) for v in s.split(",")], default=None)
    ap.add_argument("--batch-size", type=int, default=0)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default="packed,packed_xla,stacked,stacked_xla")
    ap.add_argument("--threads", type=lambda s: [int(v) for v in s.split(",")], default=None, help="intra,inter")
    ap.add_argument("--json", action="store_true")
    ap.set_defaults(precision="float32")  # executors._setup reads it
    a = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import ddmlflow  # noqa: F401 - the package's CPU kernels
    from ddmlflow.packed_training import build_branches, configure_threads

    if a.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(a.threads[0])
        tf.config.threading.set_inter_op_parallelism_threads(a.threads[1])
    else:
        configure_threads()
    import executors
    import tensorflow as tf

    from ddmlflow.devices import threads

    a.n = 16
    a.epochs = 1
    p, cfg, prep = executors._setup(a)
    dec = prep.decomposition
    boxes = list(range(dec.n))
    if len({dec.input_shape(i) for i in boxes}) != 1:
        raise SystemExit("stacking needs boxes of one shape")
    branches = build_branches(cfg, prep, boxes, [""] * len(boxes))
    rng = np.random.default_rng(0)
    bs = cfg.batch_size
    xs = [
        (tf.constant(rng.random((bs, *dec.image_shape), dtype=np.float32)), tf.constant(rng.integers(0, 2, bs)))
        for _ in range(4)
    ]
    stacked_xs = [(tf.stack([x[b.crop] for b in branches]), y) for x, y in xs]
    model = Stacked([b.net for b in branches])
    # forward check: stacked inference == each Keras net's
    ref = np.stack([b.net(xs[0][0][b.crop], training=False).numpy() for b in branches])
    fwd_diff = float(np.max(np.abs(model.forward(stacked_xs[0][0], training=False).numpy() - ref)))
    fns = {
        "packed": lambda: (_packed_step(branches, False), xs),
        "packed_xla": lambda: (_packed_step(branches, True), xs),
        "stacked": lambda: (_stacked_step(model, cfg.learning_rate, False), stacked_xs),
        "stacked_xla": lambda: (_stacked_step(model, cfg.learning_rate, True), stacked_xs),
    }
    names = a.variants.split(",")
    built = {n: fns[n]() for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(a.rounds):
        for n in names:
            fn, data = built[n]
            times[n].append(_time(fn, data, a.steps))
    med = {n: float(np.median(t)) for n, t in times.items()}
    out = {
        "preset": a.preset,
        "decomposition": a.decomposition or p.decomposition,
        "branches": len(boxes),
        "box": list(dec.input_shape(0)),
        "batch_size": bs,
        "tf_threads": threads(),
        "forward_max_abs_diff_stacked_vs_keras": fwd_diff,
        "step_ms": {n: round(1000 * v, 3) for n, v in med.items()},
        "step_ms_range": {n: [round(1000 * min(t), 3), round(1000 * max(t), 3)] for n, t in times.items()},
    }
    if "packed" in med:
        out["speedup_vs_packed"] = {n: round(med["packed"] / v, 3) for n, v in med.items()}
    print(json.dumps(out) if a.json else json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
