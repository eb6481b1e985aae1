"""One trainer per run (README "When two commands meet"), with real ``full`` commands on one sqlite store.

Every test brings about the state it asserts (processes frozen with SIGSTOP
before a kill, runs read back from the store), never a span of time.
"""

from __future__ import annotations

import os
import shutil

import psutil
import pytest
from test_reliability import _client, _full, _runs, _wait_for_epoch

from ddmlflow.tracking import train_log

pytestmark = pytest.mark.slow


def _claims() -> list:
    return [m for m in _client().search_registered_models() if m.name.startswith("ddmlflow-claim-")]


def _parents() -> list:
    return [r for r in _runs() if r.data.tags.get("ddmlflow.step") == "full"]


def _steps(runs: list, step: str) -> list[int]:
    return sorted(m.step for r in runs for m in _client().get_metric_history(r.info.run_id, step))


def test_two_identical_commands_at_once_train_each_step_once(mlflow_env):
    from ddmlflow.tracking import setup

    setup("ddmlflow-shapes2d")  # the store and experiment exist before the two commands start
    twins = [_full(["--registered-model-name", "twins"]) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in twins]
    assert [p.returncode for p in twins] == [0, 0], [e[-2000:] for _, e in outs]
    assert any("waiting for it to finish" in e for _, e in outs)  # one waited for the other's claim
    children = [r for r in _runs() if r.data.tags.get("ddmlflow.step") != "full"]
    names = sorted(r.info.run_name for r in children)
    assert names == sorted(["decompose", "train_coarse", "evaluate", *(f"train_local/{k:02d}" for k in range(4))])
    assert {r.info.status for r in children} == {"FINISHED"}
    for r in children:
        if r.info.run_name.startswith("train_"):  # every epoch logged once: nobody trained it twice
            assert _steps([r], "loss") == list(range(len(_steps([r], "loss")))), r.info.run_name
    parents = _parents()
    assert [p.info.status for p in parents] == ["FINISHED"] * 2
    assert sum(p.data.metrics["reused_steps"] for p in parents) == len(children)  # trained once, reused once
    assert len(_client().search_model_versions("name='twins'")) == 1  # one evaluate, one version
    assert _claims() == []


def test_a_claim_whose_holder_was_sigkilled_is_taken_over_and_resumed(mlflow_env, tmp_path, monkeypatch):
    """Behind `mlflow server`: the frozen processes then hold no lock on the store the test reads."""
    import mlflow

    from conftest import mlflow_server

    with mlflow_server(tmp_path) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        mlflow.set_tracking_uri(url)
        _sigkilled_holder_taken_over()


def _sigkilled_holder_taken_over() -> None:
    args = ["--executor", "process", "--epochs", "20", "--n-train", "96", "--n-val", "32"]
    proc = _full(args)
    victim = _wait_for_epoch("train_local/00", 1, proc)  # epoch 0's checkpoint is written before epoch 1 runs
    driver = psutil.Process(proc.pid)
    tree = [driver, *driver.children(recursive=True)]
    for p in tree:  # freeze the command and its training: the state below cannot move on
        p.suspend()
    assert _client().get_run(victim.info.run_id).info.status == "RUNNING"
    before = len(_steps([victim], "loss"))
    assert 1 <= before < 20 and _claims()
    proc.kill()  # the claim holder, SIGKILLed; its training process is left behind
    proc.communicate()
    for p in tree[1:]:
        p.resume()
    gone, alive = psutil.wait_procs(tree[1:], timeout=600)  # an orphaned trainer stops by itself
    assert alive == []
    assert {m.tags["pid"] for m in _claims()} == {str(proc.pid)}  # the dead holder's claims are still there

    again = _full(args)
    out, err = again.communicate(timeout=900)
    assert again.returncode == 0, err[-3000:]
    assert "is gone; taking it over" in err
    assert f"train_local/00: resuming unfinished run {victim.info.run_id}" in err
    c = _client()
    resumed = c.get_run(victim.info.run_id)
    assert resumed.info.status == "FINISHED" and resumed.data.metrics["epochs_run"] == 20
    assert _steps([resumed], "loss") == list(range(20))  # each epoch once: resumed, not retrained
    log = train_log(victim.info.run_id).read_text()
    assert log.count("Epoch 1/20") == 1  # the second attempt started from its checkpoint
    old, new = sorted(_parents(), key=lambda r: r.info.start_time)
    old = c.get_run(old.info.run_id)
    assert old.info.status == "FAILED" and "its process is gone" in old.data.tags["failure_reason"]
    assert resumed.data.tags["mlflow.parentRunId"] == new.info.run_id == old.data.tags["ddmlflow.successor"]
    assert _claims() == []


def test_changed_data_recomputes_everything_and_an_identical_rerun_on_another_executor_reuses_it(mlflow_env, tmp_path):
    from test_reuse import _folder

    data = _folder(tmp_path / "data", {"a": 24, "b": 24, "c": 24})
    args = [
        "--dataset",
        "folder",
        "--data-dir",
        str(data),
        "--image-size",
        "16,16",
        "--epochs",
        "1",
        "--n-train",
        "",
        "--n-val",
        "",
    ]
    for executor, reused in (("packed", 0), ("process", 7)):
        p = _full([*args, "--executor", executor])
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
        assert _parents()[0].data.metrics["reused_steps"] == reused, executor
    os.rename(data / "a", data / "x")  # two classes swapped, 50 % more images, the same data_dir
    os.rename(data / "b", data / "a")
    os.rename(data / "x", data / "b")
    more = _folder(tmp_path / "more", {"a": 12, "b": 12, "c": 12}, seed=1)
    for d in ("a", "b", "c"):
        for f in (more / d).iterdir():
            shutil.copy(f, data / d / f"new-{f.name}")
    p = _full([*args, "--executor", "packed"])
    out, err = p.communicate(timeout=900)
    assert p.returncode == 0, err[-3000:]
    newest = max(_parents(), key=lambda r: r.info.start_time)
    assert newest.data.metrics["reused_steps"] == 0
    dec = [r for r in _runs("decompose")]
    assert len(dec) == 2 and sorted(int(r.data.params["train_size"]) + int(r.data.params["val_size"]) for r in dec) == [
        72,
        108,
    ]
