"""Fan-out: k mod G pinning, per-device limits, failure isolation, no inherited run id."""
from __future__ import annotations

import sys
import time

import pytest

from ddmlflow import devices
from ddmlflow.errors import InputError
from ddmlflow.executors import Job, LocalProcessExecutor


def _job(tmp_path, name, code, device=""):
    return Job(name, [sys.executable, "-c", code], device, tmp_path / f"{name}.log")


def test_pin_is_k_mod_g():
    assert [devices.pin(k, ["0", "1"]) for k in range(5)] == ["0", "1", "0", "1", "0"]
    assert devices.pin(3, []) == ""


@pytest.mark.parametrize("value,expected", [("none", []), ("0,1,2", ["0", "1", "2"]), ("cpu", [])])
def test_parse_gpus(value, expected):
    assert devices.parse_gpus(value) == expected


def test_parse_gpus_rejects_garbage():
    with pytest.raises(InputError, match="gpus"):
        devices.parse_gpus("first,second")


def test_children_see_their_device_and_no_parent_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_RUN_ID", "parent-should-not-leak")
    code = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'], os.environ.get('MLFLOW_RUN_ID'))"
    jobs = [_job(tmp_path, f"j{k}", code, devices.pin(k, ["0", "1"])) for k in range(4)]
    results = LocalProcessExecutor(jobs_per_device=1).run(jobs)
    assert all(r.ok for r in results)
    seen = [r.job.log.read_text().split() for r in results]
    assert seen == [["0", "None"], ["1", "None"], ["0", "None"], ["1", "None"]]


def test_one_job_per_device_at_a_time(tmp_path):
    # each job records its start and end; on one device they must not overlap
    code = "import time,sys; t=time.time(); time.sleep(0.6); print(t, time.time())"
    jobs = [_job(tmp_path, f"j{k}", code, "0") for k in range(3)]
    results = LocalProcessExecutor(jobs_per_device=1, poll_s=0.05).run(jobs)
    spans = sorted(tuple(map(float, r.job.log.read_text().split())) for r in results)
    assert all(b[0] >= a[1] - 1e-3 for a, b in zip(spans, spans[1:]))


def test_cpu_jobs_run_max_parallel_at_once(tmp_path):
    code = "import time; time.sleep(1.0)"
    jobs = [_job(tmp_path, f"j{k}", code) for k in range(4)]
    t0 = time.time()
    LocalProcessExecutor(max_parallel=4, poll_s=0.05).run(jobs)
    assert time.time() - t0 < 3.5  # 4 x 1 s sequential would take > 4 s


def test_failure_is_isolated_and_explained(tmp_path):
    jobs = [_job(tmp_path, "ok1", "print('fine')"),
            _job(tmp_path, "bad", "raise SystemExit('box 1 exploded')"),
            _job(tmp_path, "killed", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"),
            _job(tmp_path, "ok2", "print('fine')")]
    results = LocalProcessExecutor(max_parallel=2, poll_s=0.05).run(jobs)
    assert [r.ok for r in results] == [True, False, False, True]
    assert results[1].reason() == "box 1 exploded"
    assert "SIGKILL" in results[2].reason()
