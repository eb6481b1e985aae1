"""Reliability: resume after SIGKILL, failure isolation, Ctrl-C, determinism, 16 concurrent writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import experiment_ids
from ddmlflow.cli import main
from ddmlflow.tracking import train_log

SMALL = [
    "--n-train",
    "480",
    "--n-val",
    "96",
    "--epochs",
    "4",
    "--coarse-epochs",
    "2",
    "--global",
    "false",
    "--patience",
    "0",
    "--registered-model-name",
    "-",
]


def _client():
    import mlflow

    return mlflow.MlflowClient()


def _runs(name_prefix: str = "") -> list:
    return [
        r
        for r in _client().search_runs(experiment_ids(_client()), max_results=500)
        if r.info.run_name.startswith(name_prefix)
    ]


def _pid_of(run_id: str) -> int | None:
    """The training process started for this run (its command line names the run id)."""
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if run_id in (p / "cmdline").read_bytes().decode(errors="ignore"):
                    return int(p.name)
            except OSError:
                pass
    return None


def _child_of(parent: int, marker: str) -> int:
    """The child process of ``parent`` whose command line holds ``marker``."""
    for p in Path("/proc").iterdir():
        try:
            if (
                p.name.isdigit()
                and int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent
                and marker in (p / "cmdline").read_bytes().decode(errors="ignore")
            ):
                return int(p.name)
        except (OSError, ValueError, IndexError):
            pass
    raise AssertionError(f"no child of {parent} runs {marker}")


def _alive(pid: int) -> bool:
    """Running, not a zombie its parent has yet to reap."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _job_log(run_id: str) -> str:
    """The end of what a training run's process printed."""
    log = train_log(run_id)
    return log.read_text()[-2000:] if log.exists() else f"no log at {log}"


def _full(extra=()) -> subprocess.Popen:
    """``full`` in its own process group, with SIGINT at its default as under a terminal (a suite started
    in the background, ``cmd &``, ignores SIGINT, and its children would inherit that)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ddmlflow.cli", "full", *SMALL, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_epoch(run_name: str, step: int, proc: subprocess.Popen, timeout: float = 300):
    """Poll the store until ``run_name`` has logged epoch ``step``; returns the run."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        for r in _runs(run_name):
            if any(m.step >= step for m in _client().get_metric_history(r.info.run_id, "loss")):
                return r
        time.sleep(0.2)
    raise AssertionError(f"{run_name} never reached epoch {step}")


@pytest.mark.slow
def test_sigkilled_local_is_isolated_then_resumed(mlflow_env):
    proc = _full(["--executor", "process"])
    victim = _wait_for_epoch("train_local/00", 1, proc)
    pid = _pid_of(victim.info.run_id)
    assert pid is not None, f"train_local/00 ended before its kill: {_job_log(victim.info.run_id)}"
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1
    assert "1 of 4 trainings failed: train_local/00: killed by SIGKILL" in err
    assert "Rerun the same command to resume" in err and "Traceback" not in err
    c = _client()
    killed = c.get_run(victim.info.run_id)
    assert killed.info.status == "FAILED" and "SIGKILL" in killed.data.tags["failure_reason"]
    assert [r.info.status for r in _runs("train_local/0") if r.info.run_id != victim.info.run_id] == ["FINISHED"] * 3
    assert _runs("train_coarse") == [] and _runs("evaluate") == []  # nothing ran on an incomplete set
    assert len(c.get_metric_history(victim.info.run_id, "loss")) >= 2

    again = _full(["--executor", "process"])
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    assert f"train_local/00: resuming unfinished run {victim.info.run_id}" in err
    assert len(_runs("train_local/")) == 4  # the three finished ones were reused, none retrained
    resumed = c.get_run(victim.info.run_id)
    assert resumed.info.status == "FINISHED" and resumed.data.metrics["epochs_run"] == 4
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
        steps = sorted(m.step for m in c.get_metric_history(victim.info.run_id, metric))
        assert steps == [0, 1, 2, 3], (metric, steps)
    log = train_log(victim.info.run_id).read_text()
    assert log.count("Epoch 1/4") == 1  # the second attempt started from its last finished epoch


def _wait_for(what: str, ok, proc: subprocess.Popen, timeout: float = 600):
    """Poll until ``ok()`` (a state the code records: a run status, a tag, a pending signal)."""
    deadline = time.time() + timeout
    while not ok():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, f"never: {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_ctrl_c_stops_children_and_marks_runs_killed(mlflow_env):
    """The Ctrl-C reaches a local that is training: with 1000 epochs to go it cannot have ended, whatever
    the machine's load."""
    proc = _full(["--executor", "process", "--epochs", "1000"])  # the locals cannot end before the Ctrl-C
    _wait_for_epoch("train_local/00", 0, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    statuses = {
        ("full" if r.data.tags.get("ddmlflow.step") == "full" else r.info.run_name): r.info.status for r in _runs()
    }
    assert statuses["full"] == "KILLED"
    assert statuses["train_local/00"] == "KILLED"
    assert "RUNNING" not in statuses.values(), statuses
    assert _pid_of(_runs("train_local/00")[0].info.run_id) is None


@pytest.mark.slow
def test_ctrl_c_while_the_driver_trains_the_global_net_marks_it_killed(mlflow_env, tmp_path, monkeypatch):
    """Packed on the CPU: the global net trains in the driver (after the group); Ctrl-C there ends it KILLED.

    The driver is frozen once its global training has started, until the packed worker has finished the
    locals (a local still logging its model at Ctrl-C time would be KILLED, rightly); then the Ctrl-C. The
    store is a server: a process frozen inside a sqlite transaction would lock out every other. The global
    net trains with batches of one (tuned values, ``hparams``), so it cannot end before the driver is frozen."""
    import json

    import mlflow

    from conftest import mlflow_server
    from ddmlflow.config import resolve

    batch = resolve().batch_size
    hparams = tmp_path / "hparams.json"
    hparams.write_text(
        json.dumps({"global": {"batch_size": 1}, **{f"local/{k:02d}": {"batch_size": batch} for k in range(4)}})
    )
    with mlflow_server(tmp_path) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        mlflow.set_tracking_uri(url)
        _ctrl_c_in_the_driver(["--hparams", str(hparams)])


def _ctrl_c_in_the_driver(extra: list[str]) -> None:
    import psutil

    proc = _full(["--executor", "packed", "--global", "true", *extra])
    _wait_for(
        "train_global starts in the driver",
        lambda: any("ddmlflow.pid" in r.data.tags for r in _runs("train_global")),
        proc,
    )
    driver = psutil.Process(proc.pid)
    driver.suspend()
    try:
        _wait_for(
            "the four locals finish", lambda: [r.info.status for r in _runs("train_local/")] == ["FINISHED"] * 4, proc
        )
        (glob,) = _runs("train_global")
        assert glob.info.status == "RUNNING"
        os.killpg(proc.pid, signal.SIGINT)  # pending until the driver runs again
    finally:
        driver.resume()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    runs = {("full" if r.data.tags.get("ddmlflow.step") == "full" else r.info.run_name): r for r in _runs()}
    assert runs["full"].info.status == "KILLED" and runs["train_global"].info.status == "KILLED"
    assert runs["train_global"].data.tags["ddmlflow.pid"] == str(proc.pid) == glob.data.tags["ddmlflow.pid"]
    assert {runs[f"train_local/{k:02d}"].info.status for k in range(4)} == {"FINISHED"}
    assert "train_coarse" not in runs


@pytest.mark.slow
def test_sigkilled_packed_group_resumes_from_its_last_epoch(mlflow_env):
    """The packed worker (all four locals as one program) killed after epoch 1: every local fails with
    the reason, and the rerun resumes the group from its checkpoint, each epoch logged exactly once."""
    proc = _full(["--executor", "packed"])
    first = _wait_for_epoch("train_local/00", 0, proc)
    # this run's worker, not another one's; looked up while it trains (a worker that has ended is a
    # zombie without a command line), then it must live until epoch 1 of every local is logged
    worker = _child_of(proc.pid, "ddmlflow.executors.worker")
    _wait_for_epoch("train_local/03", 1, proc)  # the group logs its branches one after another
    assert _alive(worker), f"the packed worker ended before its kill: {_job_log(first.info.run_id)}"
    os.kill(worker, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1 and "4 of 4 trainings failed" in err and "killed by SIGKILL" in err, err[-2000:]
    locals_ = _runs("train_local/")
    assert len(locals_) == 4 and {r.info.status for r in locals_} == {"FAILED"}
    assert {r.data.tags["ddmlflow.group"] for r in locals_} == {first.data.tags["ddmlflow.group"]}
    done_before = {r.info.run_id: len(_history(r.info.run_id, "loss")) for r in locals_}
    assert min(done_before.values()) >= 2

    again = _full(["--executor", "packed"])
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    assert sum("resuming unfinished run" in line for line in err.splitlines()) == 4
    for r in _runs("train_local/"):
        assert r.info.run_id in done_before  # the same four runs, resumed
        done = _client().get_run(r.info.run_id)
        assert done.info.status == "FINISHED" and done.data.metrics["epochs_run"] == 4
        for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert [s for s, _ in _history(r.info.run_id, metric)] == [0, 1, 2, 3], metric


def _history(run_id: str, metric: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in sorted(_client().get_metric_history(run_id, metric), key=lambda m: m.step)]


def test_same_seed_same_metrics_other_seed_other_training(mlflow_env, capsys):
    assert main(["decompose", "--n-train", "64", "--n-val", "32"]) == 0
    dec = _runs("decompose")[0].info.run_id
    for seed in ("7", "7", "8"):
        assert (
            main(
                [
                    "train-local",
                    "--decompose-run",
                    dec,
                    "--box",
                    "1",
                    "--epochs",
                    "2",
                    "--n-train",
                    "64",
                    "--n-val",
                    "32",
                    "--seed",
                    seed,
                ]
            )
            == 0
        )
    runs = {r.info.run_id: r.data.params["seed"] for r in _runs("train_local/01")}
    (a, b), (c,) = [r for r, s in runs.items() if s == "7"], [r for r, s in runs.items() if s == "8"]
    for metric in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert _history(a, metric) == _history(b, metric) and len(_history(a, metric)) == 2
    # another seed, same data: other initial weights and batch order, so another loss curve
    assert [v for _, v in _history(c, "loss")] != [v for _, v in _history(a, "loss")]


WRITER = """
import sys, mlflow
from ddmlflow.tracking import retry
mlflow.start_run(run_id=sys.argv[1])
for step in range(40):
    retry(mlflow.log_metric, "loss", 1.0 / (step + 1), step=step)
retry(mlflow.log_params, {"writer": sys.argv[1][:8]})
mlflow.end_run()
"""


@pytest.mark.slow
def test_sixteen_concurrent_writers_lose_nothing(mlflow_env):
    from ddmlflow.tracking import create_child, setup

    exp = setup()  # the parent creates the store and experiment before any child starts
    parent = create_child(exp, None, "full", "full", "")
    ids = [create_child(exp, parent, f"train_local/{k:02d}", "train_local", "") for k in range(16)]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, i], env=env, stderr=subprocess.PIPE, text=True) for i in ids
    ]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 16, errs
    assert not any("locked" in e for e in errs)
    c = _client()
    for i in ids:
        r = c.get_run(i)
        assert r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parent
        assert sorted(m.step for m in c.get_metric_history(i, "loss")) == list(range(40))
