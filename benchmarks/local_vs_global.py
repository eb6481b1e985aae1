"""Seconds per epoch: the global net vs its N local nets (KLW's speed argument), printed as ratios.

    python benchmarks/local_vs_global.py --preset cifar10-vgg3-2x2 --n 2048

Prints the global epoch time, each local's, and
  ratio_slowest = slowest local / global   (parallel: one GPU per local)
  ratio_sum     = sum of locals / global   (one device, locals one after another)
On a CPU small local nets are dominated by per-step overhead, so ratio_sum is far
above the 1/N one would expect from FLOPs; on GPUs ratio_slowest is what counts.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def epoch_seconds(model, x, y, num_classes, batch_size, repeats=2) -> float:
    from ddmlflow.training import FitConfig, compile_model

    compile_model(model, num_classes, FitConfig(epochs=1, batch_size=batch_size, learning_rate=1e-3))
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)  # warm-up: tracing
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=repeats, verbose=0)
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    from ddmlflow import models, presets
    from ddmlflow.decomposition import make

    ap = argparse.ArgumentParser(allow_abbrev=False)
    ap.add_argument("--preset", default="cifar10-vgg3-2x2")
    ap.add_argument("--n", type=int, default=2048, help="random training images")
    a = ap.parse_args()
    p = presets.get(a.preset)
    rng = np.random.default_rng(0)
    x = rng.random((a.n, *p.image_shape), dtype=np.float32)
    y = rng.integers(0, p.num_classes, a.n)
    dec = make(p.decomposition, p.image_shape, p.overlap)
    g = epoch_seconds(models.build(p.model, p.image_shape, p.num_classes), x, y, p.num_classes, p.batch_size)
    loc = [
        epoch_seconds(
            models.build(p.model, dec.input_shape(i), p.num_classes, p.width_divisor),
            np.ascontiguousarray(dec.crop(x, i)),
            y,
            p.num_classes,
            p.batch_size,
        )
        for i in range(dec.n)
    ]
    print(f"preset {a.preset}: global {g:.2f} s/epoch; locals " + ", ".join(f"{t:.2f}" for t in loc))
    print(f"ratio_slowest {max(loc) / g:.3f}  ratio_sum {sum(loc) / g:.3f}  (N = {dec.n})")


if __name__ == "__main__":
    main()
