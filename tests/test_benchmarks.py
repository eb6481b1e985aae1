"""The speed benchmarks still run: each route on a few random images, one JSON object with every figure.

No figure is checked against a bound (that is the benchmark's job, on a quiet machine); what is
checked is that every route ran and that the ratios are the ratios of the reported times.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_executors_benchmark_prints_every_figure():
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "executors.py"),
            "--preset",
            "cifar10-vgg3-2x2",
            "--n",
            "64",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for key in (
        "global_s_per_epoch",
        "process_sum_s_per_epoch",
        "packed_s_per_epoch",
        "process_speedup",
        "packed_speedup",
        "flops_ratio",
        "packed_rss_mb",
        "global_rss_mb",
        "inference_speedup",
    ):
        assert out[key] > 0, key
    assert out["global_s_per_epoch"] == min(
        out["global_default_threads_s_per_epoch"], out["global_packed_threads_s_per_epoch"]
    )
    assert out["packed_speedup"] == pytest.approx(out["global_s_per_epoch"] / out["packed_s_per_epoch"])
    assert out["packed_tf_threads"].startswith("intra_op=1,")
    assert 3.5 < out["flops_ratio"] < 4.5  # four half-width locals of a quarter of the pixels each (with overlap 0)


def test_rounds_time_each_route_in_its_own_process_and_report_medians():
    """``--rounds``: the routes again in turn, each in a fresh process, so the packed locals keep the packed
    engine's threads in every round; the speedups are the medians of the per-round ratios."""
    import statistics

    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "executors.py"),
            "--preset",
            "cifar10-vgg3-2x2",
            "--n",
            "64",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--routes",
            "global,packed",
            "--rounds",
            "3",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    rounds = out["rounds"]
    assert len(rounds) == 3 and "process_speedup" not in out
    for x in rounds:
        assert x["packed_tf_threads"].startswith("intra_op=1,")
        assert x["packed_speedup"] == pytest.approx(x["global_s_per_epoch"] / x["packed_s_per_epoch"])
    assert (
        out["packed_speedup"] == out["packed_speedup_median"] == statistics.median(x["packed_speedup"] for x in rounds)
    )


def test_precision_benchmark_times_each_precision_in_the_same_call():
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "precision.py"), "--n", "32", "--epochs", "2", "--routes", "packed"]
        + ["--json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    f32, bf16 = out["packed_s_per_epoch@float32"], out["packed_s_per_epoch@mixed_bfloat16"]
    assert f32 > 0 and bf16 > 0
    assert out["packed_speedup@mixed_bfloat16"] == pytest.approx(f32 / bf16)


def test_decomposition_option_replaces_the_presets():
    """``--decomposition 8x8``: 64 locals of the preset's image, reported under ``decomposition``."""
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("bench_executors", ROOT / "benchmarks" / "executors.py")
    executors = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(executors)
    a = SimpleNamespace(
        preset="cifar10-vgg3-2x2",
        image_size=None,
        n=8,
        epochs=1,
        batch_size=0,
        decomposition="8x8",
        precision="float32",
    )
    _, _, prep = executors._setup(a)
    assert prep.decomposition.n == 64 and prep.decomposition.input_shape(0) == (4, 4, 3)
