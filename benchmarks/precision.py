"""Seconds per epoch of the global net and the packed locals under each training precision, as ratios.

    python benchmarks/precision.py --preset cifar10-vgg3-2x2 --n 2048 --rounds 3 --json

Each round times every (precision, route) pair in turn, each in a fresh process of
``benchmarks/executors.py --route`` (same data, settings and threads as there: the global net with
TensorFlow's default threads, the locals packed with the packed engine's). ``<route>_speedup@<p>`` is the
median over rounds of float32's seconds per epoch over precision p's, so a shared CPU slows both sides
of a ratio alike. Accuracy is not measured here (random data): see the README's "Precision".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from executors import run_child, show  # the executors benchmark, beside this file


def main() -> None:
    from ddmlflow.config import PRECISIONS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("--preset", default="cifar10-vgg3-2x2")
    ap.add_argument("--n", type=int, default=2048, help="random training images (validation: n/4)")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs + 1 warm-up epoch")
    ap.add_argument("--image-size", default=None, help="spatial size instead of the preset's, e.g. 64,64,32")
    ap.add_argument("--routes", default="global,packed")
    ap.add_argument("--precisions", default="float32,mixed_bfloat16", help=f"from {', '.join(PRECISIONS)}")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()
    precisions, routes = a.precisions.split(","), a.routes.split(",")
    base = ["--preset", a.preset, "--n", str(a.n), "--epochs", str(a.epochs)]
    base += ["--image-size", a.image_size] if a.image_size else []
    rounds = []
    for _ in range(max(a.rounds, 1)):
        rounds.append(
            {(r, p): run_child(r, [*base, "--precision", p])["s_per_epoch"] for p in precisions for r in routes}
        )
    out: dict = {"preset": a.preset, "n": a.n, "epochs": a.epochs, "rounds": len(rounds)}
    for r in routes:
        for p in precisions:
            out[f"{r}_s_per_epoch@{p}"] = float(np.median([x[(r, p)] for x in rounds]))
            if p != precisions[0]:
                out[f"{r}_speedup@{p}"] = float(np.median([x[(r, precisions[0])] / x[(r, p)] for x in rounds]))
    show(out, a.json)


if __name__ == "__main__":
    main()
