"""executor=ray: real Ray (in-process, 2 CPUs; a simulated 2-node cluster), real `mlflow server`.

Never `ray stop` (it ends every Ray process of the user): ``ray.init`` here and
``ray.shutdown()``, or ``ray.cluster_utils.Cluster`` and its own shutdown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

ray = pytest.importorskip("ray")

from conftest import mlflow_server, use_store  # noqa: E402
from ddmlflow.config import FullOptions, parse_options, resolve  # noqa: E402
from ddmlflow.errors import InputError  # noqa: E402

pytestmark = pytest.mark.slow
TINY = dict(n_train="120", n_val="60", epochs="1", coarse_epochs="1")
TAG = "ddmlflow.ray."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 (sqlite backend, artifacts through the server); killed at the end."""
    with mlflow_server(tmp_path_factory.mktemp("server")) as url:
        yield url


@pytest.fixture(scope="module")
def local_ray(server, tmp_path_factory):
    """An in-process Ray of 2 CPUs whose workers share this process's work folder; tracking on the server."""
    tmp = tmp_path_factory.mktemp("ray")
    with pytest.MonkeyPatch.context() as mp:
        use_store(mp, server, tmp)
        ray.shutdown()
        ray.init(address="local", num_cpus=2, include_dashboard=False)  # never an earlier cluster of this machine
        yield server
        ray.shutdown()


def _client():
    import mlflow

    return mlflow.MlflowClient()


def _children(parent_id: str, exp: str) -> dict:
    return {r.info.run_name: r for r in _client().search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_id}'")}


def _full(executor: str, experiment: str, monkeypatch, **cfg) -> dict:
    from ddmlflow.commands.full import run_full

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    opts = parse_options(FullOptions, executor=executor, gpus="none", registered_model_name="-", max_parallel="2")
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)  # mlflow.set_experiment sets it: it would pin the next full
    try:
        return run_full(resolve("", **{**TINY, **cfg}), opts)
    finally:
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


def test_sqlite_with_a_cluster_address_is_refused_before_any_work(tmp_path):
    """One line naming MLFLOW_TRACKING_URI and `mlflow server`; no store, no run, no Ray connection (10.x)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}", "DDMLFLOW_WORK": str(tmp_path)}
    env.pop("MLFLOW_RUN_ID", None)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ddmlflow.cli",
            "full",
            "--executor",
            "ray",
            "--ray-address",
            "ray://10.0.0.1:10001",
            "--epochs",
            "1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "MLFLOW_TRACKING_URI" in lines[0] and "mlflow server" in lines[0], r.stderr
    assert not (tmp_path / "m.db").exists()


def test_work_folder_is_per_user_and_keyed_by_the_tracking_store(tmp_path, monkeypatch):
    import mlflow

    from ddmlflow.tracking import work_dir

    monkeypatch.delenv("DDMLFLOW_WORK", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    folders = []
    for uri in ("sqlite:////a/m.db", "http://127.0.0.1:5000", "sqlite:////a/m.db"):
        monkeypatch.setattr(mlflow, "get_tracking_uri", lambda u=uri: u)
        folders.append(work_dir("checkpoints", "r1"))
    assert folders[0] == folders[2] != folders[1]
    assert all(f.is_relative_to(tmp_path / "cache" / "ddmlflow" / "work") for f in folders)
    monkeypatch.setenv("DDMLFLOW_WORK", str(tmp_path / "mine"))
    assert work_dir("x") == tmp_path / "mine" / "x"


@pytest.mark.parametrize(
    "uri,local",
    [
        ("sqlite:///m.db", True),
        ("file:///x/mlruns", True),
        ("mlruns", True),
        ("http://127.0.0.1:5000", False),
        ("postgresql://u@h/db", False),
        ("databricks", False),
    ],
)
def test_local_stores_are_told_from_servers(uri, local, tmp_path, monkeypatch):
    from ddmlflow.executors.ray import absolute_uri
    from ddmlflow.tracking import is_local_store

    assert is_local_store(uri) == local
    monkeypatch.chdir(tmp_path)
    assert absolute_uri(uri) == (
        uri
        if not local or uri.startswith("file")
        else f"sqlite:///{tmp_path / 'm.db'}"
        if uri.startswith("sqlite")
        else str(tmp_path / uri)
    )


def test_gpus_on_a_cluster_without_gpus_fail_at_once(local_ray):
    from ddmlflow.executors import check

    with pytest.raises(InputError, match="gpus.*no GPUs"):
        check(parse_options(FullOptions, executor="ray", gpus="0"), local_ray)


def test_ray_process_and_packed_train_the_same_weights(local_ray, monkeypatch):
    """Same seed, same tree, same weights on every route, CT augmentation (``rotate3d``) on: the batch
    source draws each sample's rotation by its index and a local trains with the same CPU threads whichever
    executor runs it. Every Ray training child is tagged with its Ray node."""
    import numpy as np

    from ddmlflow.pipeline.train import load_keras

    shapes3d = dict(dataset="shapes3d", n_train="40", n_val="16")
    outs = {ex: _full(ex, f"on-{ex}", monkeypatch, **shapes3d) for ex in ("ray", "process", "packed")}
    ray_out = outs["ray"]
    for ex, out in outs.items():
        assert out["runs"].keys() == ray_out["runs"].keys(), ex
        assert {k: v for k, v in out["results"].items() if k.startswith("val_accuracy/")} == {
            k: v for k, v in ray_out["results"].items() if k.startswith("val_accuracy/")
        }, ex
    for name in [n for n in ray_out["runs"] if n.startswith("train_local/")] + ["train_global"]:
        nets = {ex: load_keras(out["runs"][name]).get_weights() for ex, out in outs.items()}
        for ex in ("process", "packed"):
            diff = max(float(np.max(np.abs(a - b))) for a, b in zip(nets["ray"], nets[ex]))
            assert diff < 1e-5, f"{name}: ray vs {ex} {diff}"
    node = ray.get_runtime_context().get_node_id()
    client = _client()
    for name, run_id in ray_out["runs"].items():
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED", name
        if name == "train_global" or name.startswith("train_local/"):  # the trainings (not train_coarse)
            assert run.data.tags[TAG + "node_id"] == node and run.data.tags[TAG + "gpu_ids"] == "none", name
            assert run.data.tags["CUDA_VISIBLE_DEVICES"] == ""
    assert not any(TAG + "node_id" in client.get_run(r).data.tags for r in outs["process"]["runs"].values())


@pytest.fixture(scope="module")
def decomposed(local_ray):
    """One decompose run (tiny shapes2d) under a parent, for the executor-level fault tests."""
    from ddmlflow.steps import STEPS
    from ddmlflow.tracking import create_child, setup, step_run

    os.environ["MLFLOW_EXPERIMENT_NAME"] = "faults"
    try:
        exp = setup()
    finally:
        del os.environ["MLFLOW_EXPERIMENT_NAME"]
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    cfg = resolve("", **TINY)
    run_id = create_child(exp, None, "decompose", "decompose", key="")
    with step_run(run_id):
        STEPS["decompose"].call(cfg)
    return exp, run_id


def _jobs(exp, parent, decompose_run, boxes, **cfg):
    from ddmlflow.executors import Job
    from ddmlflow.tracking import create_child, train_log

    jobs = []
    for b in boxes:
        name = f"train_local/{b:02d}"
        run_id = create_child(exp, parent, name, "train_local", key="")
        jobs.append(
            Job(
                "train_local",
                name,
                run_id,
                {"decompose_run": decompose_run, "box": b},
                resolve("", **{**TINY, **cfg}),
                log=train_log(run_id),
            )
        )
    return jobs


def _debug_runs(experiment: str, node: str) -> str:
    exp = _client().get_experiment_by_name(experiment)
    runs = _client().search_runs([exp.experiment_id]) if exp else []
    return f"node b {node}: " + "; ".join(
        f"{r.info.run_name} {r.info.status} {r.data.tags.get(TAG + 'node_id')} "
        f"{[f.path for f in _client().list_artifacts(r.info.run_id, 'checkpoint')]}"
        for r in runs
    )


def _epochs(run_id: str) -> list[int]:
    return sorted(m.step for m in _client().get_metric_history(run_id, "loss"))


def test_a_killed_task_is_retried_and_resumes(decomposed):
    """SIGKILL to the worker after its first epoch: Ray retries, the retry starts at epoch 2, each epoch once."""
    from ddmlflow.executors.ray import RayExecutor
    from ddmlflow.tracking import work_dir

    exp, dec = decomposed
    job = _jobs(exp, None, dec, [0], epochs="3")[0]
    out: list = []
    t = threading.Thread(target=lambda: out.extend(RayExecutor().run([job])))
    t.start()
    checkpoint = work_dir("checkpoints", job.run_id) / "fit.npz"  # written after each finished epoch
    while not checkpoint.exists():
        assert t.is_alive(), out
        time.sleep(0.05)
    os.kill(int(_client().get_run(job.run_id).data.tags[TAG + "pid"]), signal.SIGKILL)
    t.join()
    assert out[0].ok, out[0].reason
    run = _client().get_run(job.run_id)
    assert run.info.status == "FINISHED" and run.data.tags[TAG + "attempts"] == "2"
    assert _epochs(job.run_id) == [0, 1, 2]
    retry_part = job.log.read_text().split("attempt 2")[1]
    assert 1 <= retry_part.count("val_accuracy:") < 3, retry_part[-2000:]  # resumed, not from epoch 1


def test_a_failing_local_fails_alone_and_the_parent_says_why(decomposed):
    from ddmlflow.commands.full import StepsFailed, _train_all
    from ddmlflow.tracking import REASON_TAG, create_child, step_run

    exp, dec = decomposed
    parent = create_child(exp, None, "full", "full", key="")
    jobs = _jobs(exp, parent, dec, [1, 99])  # there is no box 99
    with pytest.raises(StepsFailed), step_run(parent):
        _train_all(jobs, parse_options(FullOptions, executor="ray", gpus="none"))
    client = _client()
    good, bad = (client.get_run(j.run_id) for j in jobs)
    assert good.info.status == "FINISHED" and _epochs(good.info.run_id) == [0]
    assert bad.info.status == "FAILED" and bad.data.tags[TAG + "attempts"] == "2"
    top = client.get_run(parent)
    assert top.info.status == "FAILED"
    assert "train_local/99" in top.data.tags[REASON_TAG] and "IndexError" in top.data.tags[REASON_TAG]


def test_two_nodes_share_the_fan_out_and_a_lost_node_is_retried_elsewhere(server, tmp_path, monkeypatch):
    """Two Ray nodes (1 CPU each, own work folder): locals run on both; the node removed after a local's
    first epoch has that local retried on the other node, resumed from the checkpoint in the run's artifacts."""
    import mlflow
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    mlflow.set_tracking_uri(server)
    ray.shutdown()
    work = {n: str(tmp_path / f"work_{n}") for n in ("a", "b")}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "resources": {"node_a": 1},
            "include_dashboard": False,
            "env_vars": {"DDMLFLOW_WORK": work["a"]},
        },
    )
    try:
        head = cluster.head_node.node_id
        node_b = cluster.add_node(num_cpus=1, resources={"node_b": 1}, env_vars={"DDMLFLOW_WORK": work["b"]})
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": server,
            "MLFLOW_EXPERIMENT_NAME": "two-nodes",
            "DDMLFLOW_WORK": str(tmp_path / "driver"),
        }
        env.pop("MLFLOW_RUN_ID", None)
        env.pop("MLFLOW_EXPERIMENT_ID", None)  # it would take precedence over the experiment named here
        cmd = [
            sys.executable,
            "-m",
            "ddmlflow.cli",
            "full",
            "--executor",
            "ray",
            "--ray-address",
            cluster.address,
            "--global",
            "false",
            "--gpus",
            "none",
            "--registered-model-name",
            "-",
            "--n-train",
            "120",
            "--n-val",
            "60",
            "--epochs",
            "3",
            "--coarse-epochs",
            "1",
        ]
        driver = subprocess.Popen(
            cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "driver.log", "wb")
        )
        victim = None
        while victim is None:
            assert driver.poll() is None, _debug_runs("two-nodes", node_b.node_id)
            time.sleep(0.2)
            exp = _client().get_experiment_by_name("two-nodes")
            on_b = f"tags.`{TAG}node_id` = '{node_b.node_id}'"
            runs = _client().search_runs([exp.experiment_id], on_b) if exp else []
            victim = next(
                (
                    r
                    for r in runs
                    if r.info.status == "RUNNING"
                    and any(f.path.endswith("fit.npz") for f in _client().list_artifacts(r.info.run_id, "checkpoint"))
                ),
                None,
            )
        cluster.remove_node(node_b)
        assert driver.wait(timeout=1200) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        cluster.shutdown()
    runs = _children(_client().get_run(victim.info.run_id).data.tags["mlflow.parentRunId"], victim.info.experiment_id)
    locals_ = {n: r for n, r in runs.items() if n.startswith("train_local/")}
    assert len(locals_) == 4 and all(r.info.status == "FINISHED" for r in runs.values())
    nodes = {n for r in locals_.values() for n in r.data.tags[TAG + "node_ids"].split(",")}
    assert nodes == {head, node_b.node_id}
    moved = _client().get_run(victim.info.run_id)
    assert moved.data.tags[TAG + "node_ids"] == f"{node_b.node_id},{head}"
    assert _epochs(moved.info.run_id) == [0, 1, 2]
    log = open(moved.data.tags[TAG + "log"]).read()
    assert moved.data.tags[TAG + "log"].startswith(work["a"]) and "resuming from the checkpoint" in log
