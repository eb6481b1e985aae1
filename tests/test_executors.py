"""Fan-out: k mod G pinning, per-device limits, failure isolation, no inherited run id.

No test here reads a wall clock against a bound: each child records when it
ran, and the tests compare those spans with each other.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ddmlflow import devices
from ddmlflow.errors import InputError
from ddmlflow.executors import ExecutorOptions, Job, open_executor
from ddmlflow.executors.process import ProcessExecutor as _ProcessExecutor

SPAN = "import time; t = time.time(); time.sleep({s}); print(t, time.time())"


def _job(tmp_path, name, code, device=""):
    return Job("test", name, run_id=f"run-{name}", inputs={"code": code}, device=device, log=tmp_path / f"{name}.log")


def _python(job: Job) -> list[str]:
    """A test job is plain Python code (the executor's ``command`` hook), not a registered step."""
    return [sys.executable, "-c", job.inputs["code"]]


def ProcessExecutor(**kw):
    return _ProcessExecutor(command=_python, **kw)


def _spans(results):
    return [tuple(map(float, r.job.log.read_text().split())) for r in results]


def _max_concurrency(spans) -> int:
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    now = best = 0
    for _, d in events:
        now += d
        best = max(best, now)
    return best


def test_pin_is_k_mod_g():
    assert [devices.pin(k, ["0", "1"]) for k in range(5)] == ["0", "1", "0", "1", "0"]
    assert devices.pin(3, []) == ""


@pytest.mark.parametrize("value,expected", [("none", []), ("0,1,2", ["0", "1", "2"]), ("cpu", [])])
def test_parse_gpus(value, expected):
    assert devices.parse_gpus(value) == expected


def test_parse_gpus_rejects_garbage():
    with pytest.raises(InputError, match="gpus"):
        devices.parse_gpus("first,second")


def test_nvidia_smi_output_is_parsed():
    assert devices.parse_nvidia_smi("0\n1\n\n 2 \n") == ["0", "1", "2"]
    assert devices.parse_nvidia_smi("") == []


def test_auto_finds_the_gpus_nvidia_smi_lists(tmp_path, monkeypatch):
    """A fake ``nvidia-smi`` on PATH (a real executable) stands in for the driver."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '0\\n1\\n2\\n3\\n'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert devices.parse_gpus("auto") == ["0", "1", "2", "3"]


def test_children_see_their_device_and_no_parent_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_RUN_ID", "parent-should-not-leak")
    code = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'], os.environ.get('MLFLOW_RUN_ID'))"
    jobs = [_job(tmp_path, f"j{k}", code, devices.pin(k, ["0", "1"])) for k in range(4)]
    results = ProcessExecutor(jobs_per_device=1).run(jobs)
    assert all(r.ok for r in results)
    seen = [r.job.log.read_text().split() for r in results]
    assert seen == [["0", "None"], ["1", "None"], ["0", "None"], ["1", "None"]]


def test_one_job_per_device_at_a_time(tmp_path):
    jobs = [_job(tmp_path, f"j{k}", SPAN.format(s=0.6), "0") for k in range(3)]
    spans = _spans(ProcessExecutor(jobs_per_device=1, poll_s=0.05).run(jobs))
    assert _max_concurrency(spans) == 1


def test_two_jobs_per_gpu_run_together(tmp_path):
    """``jobs_per_gpu=2``: two trainings share each GPU at once, never three."""
    jobs = [_job(tmp_path, f"j{k}", SPAN.format(s=1.5), devices.pin(k, ["0", "1"])) for k in range(6)]
    results = ProcessExecutor(jobs_per_device=2, poll_s=0.05).run(jobs)
    for gpu in ("0", "1"):
        spans = _spans([r for r in results if r.job.device == gpu])
        assert _max_concurrency(spans) == 2, gpu


def test_cpu_jobs_run_max_parallel_at_once(tmp_path):
    jobs = [_job(tmp_path, f"a{k}", SPAN.format(s=1.5)) for k in range(4)]
    executor = open_executor("process", ExecutorOptions(max_parallel=2))
    executor.command = _python
    spans = _spans(executor.run(jobs))
    assert _max_concurrency(spans) == 2
    jobs = [_job(tmp_path, f"b{k}", SPAN.format(s=0.3)) for k in range(3)]
    spans = _spans(ProcessExecutor(max_parallel=1, poll_s=0.05).run(jobs))
    assert _max_concurrency(spans) == 1


def test_failure_is_isolated_and_explained(tmp_path):
    jobs = [
        _job(tmp_path, "ok1", "print('fine')"),
        _job(tmp_path, "bad", "raise SystemExit('box 1 exploded')"),
        _job(tmp_path, "killed", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"),
        _job(tmp_path, "ok2", "print('fine')"),
    ]
    results = ProcessExecutor(max_parallel=2, poll_s=0.05).run(jobs)
    assert [r.ok for r in results] == [True, False, False, True]
    assert results[1].reason == "box 1 exploded"
    assert "SIGKILL" in results[2].reason


def test_a_step_job_runs_through_the_one_worker_entry_point():
    """A job's process is the worker entry point with the job as JSON: step, run id, inputs, the typed
    config (``config.to_json``) and typed inputs (a tuner's ``SearchOptions``) come back as they were."""
    from ddmlflow.config import resolve
    from ddmlflow.executors.process import command
    from ddmlflow.tuning import SearchOptions

    cfg = resolve("", epochs="2", coarse_hidden="16,8", decomposition="type-B", n_val="7")
    job = Job("train_local", "train_local/03", "abc", {"decompose_run": "d1", "box": 3}, cfg)
    argv = command(job)
    assert argv[1:4] == ["-m", "ddmlflow.executors.worker", "--job"]
    back = Job.from_json(argv[4])
    assert (back.step, back.name, back.run_id, back.inputs, back.config) == (job.step, job.name, "abc", job.inputs, cfg)
    search = SearchOptions("grid", 3, 1, None, "val_loss", {"cnn": {"dropout": {"type": "fixed", "value": 0.2}}})
    tune = Job("tune_local", "tune_local/00", "r", {"decompose_run": "d1", "box": 0, "search": search}, cfg)
    assert Job.from_json(tune.to_json()).inputs["search"] == search


def test_futures_resolve_as_each_job_ends_and_the_block_waits(tmp_path):
    """``submit`` returns a future per job; the jobs run when a result is asked for (or the block ends),
    each future resolves when its own job ends (a callback sees the others still running)."""
    seen = []
    with ProcessExecutor(max_parallel=2, poll_s=0.05) as ex:
        fast = ex.submit(_job(tmp_path, "fast", "print('fast')"))
        go = str(tmp_path / "go")  # written by the fast job's callback: the slow job cannot end before it
        slow = ex.submit(
            _job(
                tmp_path,
                "slow",
                f"import os, time\nwhile not os.path.exists({go!r}): time.sleep(0.02)\nprint(open({go!r}).read())",
            )
        )
        fast.add_done_callback(lambda f: (seen.append(slow.done()), (tmp_path / "go").write_text("after fast")))
        assert not fast.done() and not slow.done()  # nothing runs before it is waited for
        assert fast.result().ok
    assert seen == [False]  # the fast job's future resolved while the slow one still ran
    assert slow.result().ok and (tmp_path / "slow.log").read_text().strip() == "after fast"


def test_memory_growth_is_set_on_every_visible_gpu(monkeypatch):
    """``configure_tensorflow`` turns memory growth on for each GPU TensorFlow lists (here: two fakes)."""
    import tensorflow as tf

    calls = []
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: ["GPU:0", "GPU:1"] if kind == "GPU" else [])
    monkeypatch.setattr(tf.config, "get_visible_devices", lambda kind: ["GPU:0", "GPU:1"] if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", lambda g, on: calls.append((g, on)))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert devices.configure_tensorflow() == "GPU:3"
    assert calls == [("GPU:0", True), ("GPU:1", True)]


@pytest.mark.parametrize("user", [None, "0"])
def test_importing_ddmlflow_turns_onednn_on_unless_the_user_chose(user):
    """TensorFlow leaves oneDNN's CPU kernels off on AVX2-only CPUs (3.4x slower 3D training there);
    ``import ddmlflow`` turns them on before TensorFlow starts, and ``TF_ENABLE_ONEDNN_OPTS=0`` wins."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if user is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = user
    code = (
        "import os, ddmlflow, tensorflow; from ddmlflow.devices import onednn; "
        "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], onednn())"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == (["1", "on"] if user is None else ["0", "off"])


def test_packed_plan_splits_the_cpu_only():
    """On the CPU, packed locals get a worker of their own (one thread per op) and the other jobs wait for
    it (they run in the driver, with TensorFlow's default threads); a GPU keeps one worker for everything
    pinned there."""
    from ddmlflow.executors.packed import workers

    def job(step, box, device):
        return Job(step, f"{step}/{box}", f"run-{step}-{box}-{device}", {"box": box}, device=device)

    cpu = [job("train_global", 0, "")] + [job("train_local", k, "") for k in range(4)]
    plan = workers(cpu)
    assert [(name, [j.step for j in js], after) for name, js, after in plan] == [
        ("cpu-packed", ["train_local"] * 4, None),
        ("cpu-other", ["train_global"], "cpu-packed"),
    ]
    gpus = [job("train_global", 0, "0")] + [job("train_local", k, str(k % 2)) for k in range(4)]
    assert [(name, len(js), after) for name, js, after in workers(gpus)] == [("0", 3, None), ("1", 2, None)]
    one_local = [job("train_global", 0, ""), job("train_local", 0, "")]
    assert [(name, len(js), after) for name, js, after in workers(one_local)] == [("cpu", 2, None)]
    assert [name for name, _, _ in workers(cpu[1:])] == ["cpu"]


def test_prestarted_worker_runs_the_jobs_it_is_handed_and_stop_spares_stops_the_rest(mlflow_env, tmp_path, monkeypatch):
    """``prestart`` starts workers before their jobs exist (``full``: before it imports MLflow and opens its
    parent run); they import, connect to the store once it is ready, then wait. ``run`` hands a job to one
    of them and ``stop_spares`` stops the other. The job is the cheap ``decompose`` step, run into its own
    run. The store is the one this process uses (set in Python), not the one in the workers' environment."""
    import mlflow

    from ddmlflow.config import resolve
    from ddmlflow.executors import packed
    from ddmlflow.executors.worker import STATUS

    decoy = tmp_path / "decoy.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{decoy}")  # what the workers inherit
    packed.prestart(["", ""])
    assert len(packed.SPARES) == 1  # one per device
    packed.prestart(["", "0"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_env)
    assert mlflow.get_tracking_uri() == mlflow_env
    first, second = packed.SPARES
    assert [first.device, second.device] == ["", "0"]
    packed.store_ready()
    run = mlflow.MlflowClient().create_run("0", run_name="decompose")
    cfg = resolve("", dataset="shapes2d", n_train="16", n_val="8", decomposition="2x2")
    job = Job("decompose", "decompose", run.info.run_id, {}, cfg, log=tmp_path / "decompose.log")
    [result] = packed.PackedExecutor(poll_s=0.05).run([job])
    assert result.ok, result.reason
    assert first.proc.poll() == 0 and second.proc.poll() is None and packed.SPARES == [second]
    assert not first.folder.exists() and not (second.folder / STATUS).exists()  # read, then removed
    done = mlflow.MlflowClient().get_run(run.info.run_id)
    assert done.info.status == "FINISHED" and done.data.params["n_boxes"] == "4"
    assert not decoy.exists()
    packed.stop_spares()
    assert second.proc.poll() is not None and not packed.SPARES and not second.folder.exists()
