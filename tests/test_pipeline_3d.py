"""The 3D path end to end: generated CT-like volumes as NIfTI, cnn3d locals, a pyfunc that takes volumes."""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import experiment_ids
from ddmlflow.cli import main
from ddmlflow.data.generated import SHAPES3D_CLASSES

pytestmark = pytest.mark.slow


def test_full_3d_and_predict_nifti(mlflow_env, tmp_path, capsys):
    import mlflow
    import nibabel as nib

    argv = [
        "full",
        "--dataset",
        "shapes3d",
        "--decomposition",
        "2x2x1",
        "--n-train",
        "24",
        "--n-val",
        "12",
        "--epochs",
        "1",
        "--coarse-epochs",
        "2",
        "--max-parallel",
        "2",
    ]
    assert main(argv) == 0, capsys.readouterr().err[-2000:]
    c = mlflow.MlflowClient()
    runs = {r.info.run_name: r for r in c.search_runs(experiment_ids(c))}
    # auto on the CPU: the locals packed with one thread per op in one worker; the global net in the driver
    # (here: this process) with TensorFlow's default threads, after the group (one training at a time)
    locals_ = [runs[f"train_local/{k:02d}"] for k in range(4)]
    assert {r.data.tags["ddmlflow.executor"] for r in locals_} == {"packed"}
    assert {r.data.tags["ddmlflow.tf_threads"] for r in locals_} == {
        f"intra_op=1,inter_op={len(os.sched_getaffinity(0))}"
    }
    assert runs["train_global"].data.tags["ddmlflow.tf_threads"] == "intra_op=0,inter_op=0"
    assert runs["train_global"].data.tags["ddmlflow.pid"] == str(os.getpid())
    kernels = "off" if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0" else "on"  # the package's default
    assert {r.data.tags["ddmlflow.onednn"] for r in locals_ + [runs["train_global"]]} == {kernels}
    assert len({r.data.tags["ddmlflow.pid"] for r in locals_} - {str(os.getpid())}) == 1
    last_local = max(m.timestamp for r in locals_ for m in c.get_metric_history(r.info.run_id, "loss"))
    assert min(m.timestamp for m in c.get_metric_history(runs["train_global"].info.run_id, "loss")) > last_local
    for r in locals_ + [runs["train_global"], runs["train_coarse"]]:  # packed locals watched in their group
        assert "system/cpu_utilization_percentage" in r.data.metrics, r.info.run_name
    assert {f"train_local/{k:02d}" for k in range(4)} <= set(runs)
    assert runs["train_local/00"].data.params["input_shape"] == "16x16x16x1"
    assert runs["decompose"].data.params["image_shape"] == "32x32x16x1"
    assert "val_accuracy/cnn_dnn" in runs["evaluate"].data.metrics

    model = mlflow.pyfunc.load_model("models:/ddmlflow-shapes3d@champion")
    out = model.predict(np.random.default_rng(0).random((3, 32, 32, 16, 1), dtype=np.float32))
    probs = out.drop(columns="label").to_numpy()
    assert probs.shape == (3, 6) and np.allclose(probs.sum(1), 1, atol=1e-5)

    hu = np.random.default_rng(1).uniform(-1024, 1500, (40, 40, 20)).astype(np.float32)
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(hu, np.eye(4)), scan)
    capsys.readouterr()
    assert main(["predict", "--model", "models:/ddmlflow-shapes3d@champion", str(scan)]) == 0
    name, cls, p = capsys.readouterr().out.strip().split("\t")
    assert name == str(scan) and cls in SHAPES3D_CLASSES and 1 / 6 <= float(p) <= 1
