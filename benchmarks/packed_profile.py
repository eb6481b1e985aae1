"""Where a packed step spends its time: ops per step by type, their CPU time (profiler trace), RSS by stage.

    python benchmarks/packed_profile.py --preset ct-3d-4x4x2 --image-size 64,64,32 --n 64 --json

Builds the packed group as ``executors.py``'s ``packed`` route does (random data of the preset's
shape, the packed engine's threads), times one epoch after a warm-up epoch, counts the ops of the
compiled step (the while-loop body of ``make_train_epoch``) and, with ``--trace``, records one
epoch with ``tf.profiler`` and sums the host CPU time per op type from its XPlane. The figures are
written to benchmarks/README.md ("32 small 3D locals: profile").
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def op_counts(program, *args) -> collections.Counter:
    """Op types of the biggest function of ``program``'s graph (the training loop's body)."""
    graph_def = program.get_concrete_function(*args).graph.as_graph_def()
    body = max(graph_def.library.function, key=lambda f: len(f.node_def))
    return collections.Counter(n.op for n in body.node_def)


def trace_op_times(logdir: str) -> tuple[collections.Counter, collections.Counter, float]:
    """(op type -> CPU ms, op type -> count, total ms) of the host plane of a profiler trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1]
    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(path).read_bytes())
    ms, count = collections.Counter(), collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        names = {k: m.name for k, m in plane.event_metadata.items()}
        for line in plane.lines:
            for ev in line.events:
                name = names.get(ev.metadata_id, "?")
                if ":" not in name or name.startswith(("Iterator", "Generator")):
                    continue  # only executor ops ("op_name:OpType")
                kind = name.rsplit(":", 1)[1].split("#")[0].strip()
                if kind in ("Process", "Run") or kind.startswith("__inference"):
                    continue  # the function call and the executor's run, not ops
                ms[kind] += ev.duration_ps / 1e9
                count[kind] += 1
    return ms, count, sum(ms.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="ct-3d-4x4x2")
    ap.add_argument("--decomposition", default=None)
    ap.add_argument("--image-size", type=lambda s: [int(v) for v in s.split(",")], default=None)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--branches", type=int, default=0, help="only the first k boxes (0: all)")
    ap.add_argument("--trace", action="store_true", help="record one epoch with tf.profiler")
    ap.add_argument("--json", action="store_true")
    ap.set_defaults(precision="float32")  # executors._setup reads it
    a = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import ddmlflow  # noqa: F401 - the package's CPU kernels
    from ddmlflow.packed_training import _train_batches, build_branches, configure_threads, make_train_epoch

    configure_threads()
    import executors
    import numpy as np
    import tensorflow as tf

    p, cfg, prep = executors._setup(a)
    cfg.epochs = a.epochs + 1  # the batch pipeline's length: the timed epochs and the traced one
    boxes = list(range(a.branches or prep.decomposition.n))
    out: dict = {"preset": a.preset, "branches": len(boxes), "batch_size": cfg.batch_size, "rss_start_mb": _rss_mb()}
    branches = build_branches(cfg, prep, boxes, [""] * len(boxes))
    out["rss_built_mb"] = _rss_mb()
    steps = int(np.ceil(len(prep.x_train) / cfg.batch_size))
    run = make_train_epoch(branches)
    batches = iter(_train_batches(prep, cfg, 0))
    t0 = time.perf_counter()
    run.get_concrete_function(batches, steps)
    out["trace_s"], out["rss_traced_mb"] = time.perf_counter() - t0, _rss_mb()  # the Python graph
    t0 = time.perf_counter()
    run(batches, steps)
    out["first_epoch_s"] = time.perf_counter() - t0  # graph optimisation (Grappler) included
    out["rss_first_epoch_mb"] = _rss_mb()
    times = []
    for _ in range(a.epochs - 1):
        t0 = time.perf_counter()
        run(batches, steps)
        times.append(time.perf_counter() - t0)
    out["step_ms"] = 1000 * float(np.median(times)) / steps
    ops = op_counts(run, batches, steps)
    out["ops_per_step"] = sum(ops.values())
    out["ops_top"] = dict(ops.most_common(12))
    if a.trace:
        logdir = tempfile.mkdtemp(prefix="packed_trace_")
        tf.profiler.experimental.start(logdir)
        t0 = time.perf_counter()
        run(batches, steps)
        wall = time.perf_counter() - t0
        tf.profiler.experimental.stop()
        ms, count, total = trace_op_times(logdir)
        out["trace_wall_ms_per_step"] = 1000 * wall / steps
        out["trace_op_cpu_ms_per_step"] = total / steps
        out["trace_ops_per_step"] = sum(count.values()) / steps
        out["trace_top_ms_per_step"] = {k: round(v / steps, 3) for k, v in ms.most_common(15)}
        out["trace_mean_us_per_op"] = {k: round(1000 * ms[k] / count[k], 1) for k, _ in ms.most_common(15)}
    out["rss_end_mb"] = _rss_mb()
    print(json.dumps(out) if a.json else json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
