"""Seconds per epoch of the global net vs the local nets under each executor route, as ratios.

    python benchmarks/executors.py --preset cifar10-vgg3-2x2 --n 2048 --json

Every route runs in a fresh subprocess (so its peak RSS is its own) on random
data of the preset's shape, with the SAME settings (batch size, optimizer,
validation every epoch, ``training.fit``) for the global net and the locals:

* ``global``: the global net, ``training.fit``;
* ``process``: the local nets one after another with ``training.fit`` (in one
  process; the executor's process start, import and data load are not counted);
* ``packed``: all local nets as one program, ``packed_training.train_packed``, with the
  packed engine's CPU threads (``packed_training.configure_threads``: one intra-op thread,
  one inter-op thread per core);
* ``global_threads``: the global net again, under the packed engine's threads.
  The baseline ``global_s_per_epoch`` is the faster of the two global routes,
  so no ratio is won by slowing the global net;
* ``inference``: images/s of the global net and of the CNN-DNN as one Keras
  model (crop -> locals -> coarse, ``build_coherent``) at batch 256, both through
  ``inference.predict`` (what the registered pyfunc runs), TensorFlow's default
  threads (as ``mlflow models serve`` runs them), the median of three passes.

Every route runs with the package's CPU kernels (``devices.use_onednn``: oneDNN on
unless ``TF_ENABLE_ONEDNN_OPTS=0``), reported as ``onednn``.
An epoch's time is the mean over epochs 2..E (epoch 1 includes tracing). On a
shared CPU, ``--rounds R`` times the routes R times in turn (the first pass is
round 1), each route in a fresh process with its own threads, and reports the
medians of the per-round ratios.
``--precision mixed_bfloat16`` trains every route under that Keras policy (``training.set_precision``).
``--image-size`` shrinks the volume/image (e.g. ``64,64,32`` for chest CT); ``--decomposition``
replaces the preset's (e.g. ``8x8``: 64 locals), reported as ``decomposition``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _setup(a):
    from ddmlflow import presets
    from ddmlflow.decomposition import make

    p = presets.get(a.preset)
    shape = tuple(a.image_size) + p.image_shape[-1:] if a.image_size else p.image_shape
    rng = np.random.default_rng(0)
    x = rng.random((a.n, *shape), dtype=np.float32)
    y = rng.integers(0, p.num_classes, a.n)
    nv = max(a.n // 4, 1)
    xv, yv = rng.random((nv, *shape), dtype=np.float32), rng.integers(0, p.num_classes, nv)
    dec = make(a.decomposition or p.decomposition, shape, p.overlap)
    cfg = SimpleNamespace(
        model=p.model,
        width_divisor=p.width_divisor,
        epochs=a.epochs,
        batch_size=a.batch_size or p.batch_size,
        learning_rate=p.learning_rate,
        optimizer=p.optimizer,
        patience=0,
        seed=0,
        dropout=None,  # the network's own rate
        precision=a.precision,
    )
    prep = SimpleNamespace(
        x_train=x, y_train=y, x_val=xv, y_val=yv, decomposition=dec, num_classes=p.num_classes, augment=None
    )
    return p, cfg, prep


def _per_epoch(stamps: list[float]) -> float:
    """Mean epoch time without the first epoch (tracing, warm-up)."""
    return float(np.mean(np.diff(stamps[1:]))) if len(stamps) > 2 else stamps[-1] - stamps[0]


def _fit_seconds(net, data, num_classes, cfg) -> float:
    from ddmlflow.training import EpochTimes, FitConfig, fit

    t = EpochTimes()
    fit(
        net,
        data,
        num_classes,
        FitConfig(
            cfg.epochs, cfg.batch_size, cfg.learning_rate, cfg.optimizer, patience=0, seed=0, precision=cfg.precision
        ),
        log_to_mlflow=False,
        callbacks=[t],
    )
    return _per_epoch(t.stamps)


def route_seconds(name: str, p, cfg, prep) -> float:
    """Seconds per epoch of one route (global, process: the sum over the locals, packed)."""
    from ddmlflow import models
    from ddmlflow.packed_training import train_packed
    from ddmlflow.training import EpochTimes, seed_everything

    dec, k = prep.decomposition, prep.num_classes
    if name == "global":
        seed_everything(0)
        net = models.build(p.model, dec.image_shape, k, name="global")
        return _fit_seconds(net, (prep.x_train, prep.y_train, prep.x_val, prep.y_val), k, cfg)
    if name == "process":
        total = 0.0
        for i in range(dec.n):
            seed_everything(1 + i)
            net = models.build(p.model, dec.input_shape(i), k, p.width_divisor, name=f"local_{i:02d}")
            data = tuple(
                np.ascontiguousarray(d)
                for d in (dec.crop(prep.x_train, i), prep.y_train, dec.crop(prep.x_val, i), prep.y_val)
            )
            total += _fit_seconds(net, data, k, cfg)
        return total
    t = EpochTimes()
    t.stamp()
    train_packed(cfg, prep, list(range(dec.n)), [""] * dec.n, None, t.stamp)
    return _per_epoch(t.stamps)


def route(name: str, a) -> dict:
    """One route, in this process."""
    import os as _os

    import ddmlflow  # noqa: F401 - the package's CPU kernels (devices.use_onednn), before TensorFlow starts

    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if name in ("packed", "global_threads") and not a.threads:
        from ddmlflow.packed_training import configure_threads

        configure_threads()
    if a.threads:  # intra,inter op threads, set before TensorFlow starts
        import tensorflow as tf

        intra, inter = a.threads
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    from ddmlflow import models, profiling
    from ddmlflow.devices import onednn

    p, cfg, prep = _setup(a)
    dec, k = prep.decomposition, prep.num_classes
    out: dict = {}
    if name in ("global", "global_threads", "process", "packed"):
        from ddmlflow.devices import threads

        out["s_per_epoch"] = route_seconds(name.removesuffix("_threads"), p, cfg, prep)
        out["tf_threads"] = threads()
        out["onednn"] = onednn()
        if name != "packed":  # exact FLOPs (model-profiler's convention miscounts Conv3D)
            nets = (
                [models.build(p.model, dec.image_shape, k)]
                if name.startswith("global")
                else [models.build(p.model, dec.input_shape(i), k, p.width_divisor) for i in range(dec.n)]
            )
            out["flops"] = sum(profiling.flops_exact(net) for net in nets)
    elif name == "inference":
        from ddmlflow.inference import predict
        from ddmlflow.models.cnn_dnn import build_coherent_from_scratch

        x = prep.x_train[: max(a.n, 1024)]
        nets = {
            "global": models.build(p.model, dec.image_shape, k, name="global"),
            "cnn_dnn": build_coherent_from_scratch(p.model, dec, k, p.width_divisor, p.coarse_hidden),
        }
        for key, net in nets.items():  # the served path (training.predict, as the pyfunc), median of 3 passes
            predict(net, x[:256], 256)
            rates = []
            for _ in range(3):
                t0 = time.perf_counter()
                predict(net, x, 256)
                rates.append(len(x) / (time.perf_counter() - t0))
            out[f"{key}_images_per_s"] = float(np.median(rates))
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_child(name: str, argv: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    res = subprocess.run([sys.executable, __file__, "--route", name, *argv], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"route {name} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _round(t: dict) -> dict:
    """One round's seconds per epoch and ratios; the baseline is the faster global route, as above."""
    out = {f"{n}_s_per_epoch": v["s_per_epoch"] for n, v in t.items()}
    base = min((v["s_per_epoch"] for n, v in t.items() if n.startswith("global")), default=None)
    for n in ("process", "packed"):
        if base is not None and n in t:
            out[f"{n}_speedup"] = base / t[n]["s_per_epoch"]
    if "packed" in t:
        out["packed_tf_threads"] = t["packed"]["tf_threads"]
    out["onednn"] = ",".join(sorted({v["onednn"] for v in t.values()}))
    return out


def show(out: dict, as_json: bool) -> None:
    """A benchmark's figures: one JSON object, or one aligned line each."""
    if as_json:
        print(json.dumps(out))
        return
    width = max(map(len, out))
    for key, v in out.items():
        print(f"{key:>{width}}: {v:.3f}" if isinstance(v, float) else f"{key:>{width}}: {v}")


def main() -> None:
    from ddmlflow.config import PRECISIONS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("--preset", default="cifar10-vgg3-2x2")
    ap.add_argument("--n", type=int, default=2048, help="random training images (validation: n/4)")
    ap.add_argument("--batch-size", type=int, default=0, help="default: the preset's")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs + 1 warm-up epoch")
    ap.add_argument(
        "--image-size",
        type=lambda s: [int(v) for v in s.split(",")],
        default=None,
        help="spatial size instead of the preset's, e.g. 64,64,32",
    )
    ap.add_argument(
        "--precision",
        default="float32",
        choices=PRECISIONS,
        help="every route's training precision (the config's `precision`)",
    )
    ap.add_argument("--decomposition", default=None, help="instead of the preset's, e.g. 8x8 (64 locals) or 4x4x2")
    ap.add_argument("--routes", default="global,global_threads,process,packed,inference")
    ap.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="time the routes in turn this many times in all (each in a fresh process); "
        "speedups are then the medians of the per-round ratios (robust on a shared CPU)",
    )
    ap.add_argument(
        "--threads",
        type=lambda s: [int(v) for v in s.split(",")],
        default=None,
        help="TensorFlow intra,inter op threads for every route (default: TensorFlow's)",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--route", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.route:
        print(json.dumps(route(a.route, a)))
        return
    argv = [arg for arg in sys.argv[1:] if arg not in ("--json",)]
    names = a.routes.split(",")
    r = {name: run_child(name, argv) for name in names}
    timed = [n for n in names if n != "inference"]  # each round: every timed route in turn, fresh processes
    rounds = [_round({n: r[n] for n in timed})]  # the pass above is round 1
    rounds += [_round({n: run_child(n, argv) for n in timed}) for _ in range(a.rounds - 1)]
    p, cfg, prep = _setup(a)
    out = {
        "preset": a.preset,
        "n": a.n,
        "batch_size": cfg.batch_size,
        "precision": a.precision,
        "epochs": a.epochs,
        "onednn": rounds[0]["onednn"],
        "image_shape": list(prep.decomposition.image_shape),
        "decomposition": a.decomposition or p.decomposition,
        "n_locals": prep.decomposition.n,
        "cpu_count": os.cpu_count(),
    }
    if "global_threads" in r:
        out.update(
            global_default_threads_s_per_epoch=r["global"]["s_per_epoch"],
            global_packed_threads_s_per_epoch=r["global_threads"]["s_per_epoch"],
        )
        if r["global_threads"]["s_per_epoch"] < r["global"]["s_per_epoch"]:
            r["global"] = {**r["global"], "s_per_epoch": r["global_threads"]["s_per_epoch"]}
    if "global" in r:
        out.update(global_s_per_epoch=r["global"]["s_per_epoch"], global_rss_mb=r["global"]["rss_mb"])
    if "process" in r:
        out.update(
            process_sum_s_per_epoch=r["process"]["s_per_epoch"],
            process_rss_mb=r["process"]["rss_mb"],
            process_note="locals one after another in one process (start/import/data load not counted)",
        )
        if "global" in r:
            out["flops_ratio"] = r["global"]["flops"] / r["process"]["flops"]
    if "packed" in r:
        out.update(
            packed_s_per_epoch=r["packed"]["s_per_epoch"],
            packed_rss_mb=r["packed"]["rss_mb"],
            packed_tf_threads=r["packed"]["tf_threads"],
        )
        if "global" in r:
            out["packed_rss_ratio"] = r["packed"]["rss_mb"] / r["global"]["rss_mb"]
    if "inference" in r:
        i = r["inference"]
        out.update(
            global_images_per_s=i["global_images_per_s"],
            cnn_dnn_images_per_s=i["cnn_dnn_images_per_s"],
            inference_speedup=i["cnn_dnn_images_per_s"] / i["global_images_per_s"],
        )
    med = {key: float(np.median([x[key] for x in rounds])) for key in rounds[0] if key.endswith("speedup")}
    out.update(med)  # one round: its ratios
    if a.rounds > 1:
        out.update(
            {f"{key}_median": v for key, v in med.items()},
            rounds=rounds,
            note=f"speedups: medians of per-round ratios ({', '.join(timed)} timed in turn)",
        )
    show(out, a.json)


if __name__ == "__main__":
    main()
