"""The ``tune`` step: keras-tuner searches tracked in MLflow, resumable, with tuned values reusable.

One real ``target=all`` search (module fixture: shapes2d 16x16, 2 locals, 120/60 samples, 1 epoch,
2 random trials each) is shared by the checks of the run tree, the cost figures and the
hparams round trip; the kill/resume and failure tests run their own small searches.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT

TINY = dict(decomposition="2x1", image_size="16,16", n_train="120", n_val="60", epochs="1", coarse_epochs="1")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tune")
    with pytest.MonkeyPatch.context() as mp:
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        mp.chdir(tmp)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("DDMLFLOW_WORK", str(tmp / "work"))
        mp.setenv("DDMLFLOW_CACHE", str(tmp / "cache"))
        mp.setenv("PYTHONPATH", str(ROOT))  # workers import this checkout's ddmlflow
        for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
            mp.delenv(var, raising=False)
        mlflow.set_tracking_uri(uri)
        MlflowClient().search_experiments()
        yield tmp


@pytest.fixture(scope="module")
def cfg():
    from ddmlflow.config import resolve

    return resolve("shapes2d-vgg3-2x2", **TINY)


@pytest.fixture(scope="module")
def tuned(store, cfg):
    from ddmlflow.commands.tune import tune

    with mlflow.start_run(run_name="tune") as parent:  # the two local searches run side by side
        out = tune(cfg, target="all", tuner="random", max_trials=2, epochs=1, max_parallel=2)
    return {"parent": parent.info.run_id, **out}


def search_options(
    tuner="random", max_trials=10, executions_per_trial=1, epochs=None, objective="val_accuracy", space=""
):
    """The tuner's settings as ``tune`` makes them: the command's options parsed, then ``SearchOptions.of``."""
    from ddmlflow.config import TuneOptions, parse_options
    from ddmlflow.tuning import SearchOptions

    opts = parse_options(
        TuneOptions,
        tuner=tuner,
        max_trials=str(max_trials),
        executions_per_trial=str(executions_per_trial),
        objective=objective,
        space=space,
    )
    return SearchOptions.of(opts, epochs)


def children(parent_id: str) -> dict:
    runs = MlflowClient().search_runs(["0"], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    return {r.info.run_name: r for r in runs}


@pytest.mark.slow
def test_run_tree_trials_and_best(tuned):
    c = MlflowClient()
    kids = children(tuned["parent"])
    assert set(kids) == {"decompose", "tune_local/00", "tune_local/01", "tune_coarse"}
    assert all(r.info.status == "FINISHED" for r in kids.values())
    for name in ("tune_local/00", "tune_local/01", "tune_coarse"):
        net = kids[name]
        trials = children(net.info.run_id)
        assert sorted(trials) == ["trial_0", "trial_1"], name
        for t in trials.values():  # no trial failed silently: each finished with its objective and curves
            assert t.info.status == "FINISHED" and t.data.tags["ddmlflow.trial_status"] == "COMPLETED"
            assert 0.0 <= t.data.metrics["objective"] <= 1.0
            assert [m.step for m in c.get_metric_history(t.info.run_id, "val_accuracy")] == [0]
            assert t.data.metrics["flops_spent"] > 0 and "learning_rate" in t.data.params
        best = [t for t in trials.values() if t.data.tags.get("ddmlflow.best_trial") == "true"]
        assert len(best) == 1 and net.data.tags["best_trial_run"] == best[0].info.run_id
        assert net.data.metrics["best_objective"] == best[0].data.metrics["objective"]
    assert set(children(kids["tune_local/00"].info.run_id)["trial_0"].data.params) >= {"batch_size", "dropout"}
    assert "hidden_layers" in children(kids["tune_coarse"].info.run_id)["trial_0"].data.params


@pytest.mark.slow
def test_best_hparams_json_per_network(tuned):
    from ddmlflow.hparams import load_hparams

    best = load_hparams(tuned["parent"])
    assert set(best) == {"local/00", "local/01", "coarse"}
    assert set(best["local/00"]) == {"batch_size", "learning_rate", "dropout"}
    assert set(best["coarse"]) >= {"hidden", "dropout", "learning_rate"}
    kids = children(tuned["parent"])
    for net in ("local/00", "local/01", "coarse"):  # each network logs its own part too
        best_run = MlflowClient().get_run(kids[f"tune_{net}"].data.tags["best_trial_run"])
        if net != "coarse":
            assert str(best[net]["batch_size"]) == best_run.data.params["batch_size"]


@pytest.mark.slow
def test_cost_figures_logged(tuned):
    m = MlflowClient().get_run(tuned["parent"]).data.metrics
    assert m["tune_flops/all"] == pytest.approx(m["tune_flops/locals"] + m["tune_flops/coarse"])
    assert m["tune_flops/global_equivalent"] > m["tune_flops/locals_max"] > 0
    assert m["cost_ratio/flops_total"] == pytest.approx(m["tune_flops/global_equivalent"] / m["tune_flops/all"])
    k, kk, p2, mc, md = (m[f"klw/{n}"] for n in ("K_global_params", "k_coarse_params", "p2", "M_CNN", "M_DNN"))
    assert p2 == 2 and mc == 2 and md == 2
    assert m["cost_ratio/klw_estimate"] == pytest.approx(p2 * mc / (mc + p2 * kk / k * md))


@pytest.mark.slow
def test_rerun_reuses_finished_searches(tuned, cfg):
    from ddmlflow.commands.tune import tune

    with mlflow.start_run(run_name="tune again"):
        again = tune(cfg, target="all", tuner="random", max_trials=2, epochs=1)
    assert set(again["reused"]) >= {"tune_local/00", "tune_local/01", "tune_coarse"}
    assert again["best"] == tuned["best"]


@pytest.mark.slow
def test_hparams_round_trip(tuned, cfg, tmp_path):
    from ddmlflow.errors import InputError
    from ddmlflow.hparams import apply_hparams, load_hparams

    best = load_hparams(tuned["parent"])
    path = tmp_path / "best_hparams.json"
    path.write_text(json.dumps(best))
    assert load_hparams(str(path)) == best
    local, tags = apply_hparams(cfg, best, "local/01")
    assert (local.batch_size, local.learning_rate) == (
        best["local/01"]["batch_size"],
        best["local/01"]["learning_rate"],
    )
    assert local.dropout == best["local/01"]["dropout"]
    assert tags["ddmlflow.hparams.source"] == tuned["parent"] and tags["ddmlflow.hparams.network"] == "local/01"
    coarse, _ = apply_hparams(cfg, best, "coarse")
    assert coarse.coarse_hidden == tuple(best["coarse"]["hidden"]) and coarse.batch_size == cfg.batch_size
    same, none = apply_hparams(cfg, best, "global")  # no global values: unchanged, no provenance
    assert same == cfg and none == {}
    glob_only = load_hparams(str(_write(tmp_path / "g.json", {"global": {"batch_size": 7}})))
    loc, tags = apply_hparams(cfg, glob_only, "local/05")  # a local without values takes the global net's (KLW)
    assert loc.batch_size == 7 and tags["ddmlflow.hparams.network"] == "global"
    for bad in (
        "no-such-run",
        str(_write(tmp_path / "b.json", {"local/00": {"momentum": 0.9}})),
        str(tmp_path / "missing.json"),
    ):
        with pytest.raises(InputError, match="hparams="):
            load_hparams(bad)


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("batch_size: [16, 32]\nmomentum: [0.9]\n", "not tunable"),
        ("hidden: [[50, 30]]\n", "coarse-net names go under"),
        ("learning_rate: {type: float, min: 0.1, max: 0.01}\n", "learning_rate"),
        ("dropout: [0.2, 1.5]\n", "dropout"),
        ("coarse: {hidden: [[50, x]]}\n", "layer lists"),
        ("batch_size: [16, 32\n", "valid JSON or YAML"),
        ("cnn: {batch_size: {type: normal}}\n", "type must be one of"),
    ],
)
def test_bad_space_file_is_one_input_error_line(tmp_path, text, fragment):
    from ddmlflow.errors import InputError

    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as e:
        search_options(space=str(path))
    assert fragment in str(e.value) and "\n" not in str(e.value) and str(e.value).startswith("space=")


def test_user_space_file_json_and_yaml(tmp_path):
    (tmp_path / "s.json").write_text(
        json.dumps({"cnn": {"batch_size": [8, 16]}, "coarse": {"hidden": [[50, 30], "100,50,30"], "dropout": 0.2}})
    )
    opts = search_options("grid", 3, 1, 1, "val_loss", str(tmp_path / "s.json"))
    assert opts.space["coarse"]["hidden"] == {"type": "choice", "values": ["50,30", "100,50,30"]}
    assert opts.space["coarse"]["dropout"] == {"type": "fixed", "value": 0.2}
    (tmp_path / "s.yaml").write_text("learning_rate: {type: float, min: 1.0e-4, max: 1.0e-2, sampling: log}\n")
    assert search_options(space=str(tmp_path / "s.yaml")).space["cnn"]["learning_rate"]["sampling"] == "log"


@pytest.mark.slow
@pytest.mark.parametrize("tuner", ["grid", "bayesian", "hyperband"])
def test_other_tuners_on_the_coarse_net(tuned, cfg, tuner, tmp_path):
    """Every keras-tuner tuner runs through the same tracked path (coarse net: cheap)."""
    from ddmlflow.commands.tune import tune

    (tmp_path / "s.json").write_text(
        json.dumps({"coarse": {"hidden": [[16], [32, 16]], "learning_rate": [1e-3, 1e-2]}})
    )
    local_runs = [tuned["runs"]["local/00"], tuned["runs"]["local/01"]]
    with mlflow.start_run(run_name=f"tune coarse {tuner}"):
        out = tune(
            cfg,
            target="coarse",
            tuner=tuner,
            max_trials=2,
            epochs=2,
            space=str(tmp_path / "s.json"),
            local_runs=local_runs,
            executions_per_trial=2 if tuner == "grid" else 1,
        )
    trials = children(out["runs"]["coarse"])
    assert trials and all(t.data.tags["ddmlflow.trial_status"] == "COMPLETED" for t in trials.values())
    if tuner == "grid":  # a second execution has its own curves, and both count in the FLOPs spent
        t = next(iter(trials.values())).data.metrics
        assert "val_accuracy/exec1" in t and t["epochs_run"] == 4
        assert t["flops_spent"] == pytest.approx(t["flops_per_sample"] * 120 * 4)
    assert out["best"]["coarse"]["hidden"] in ([16], [32, 16])


@pytest.mark.slow
def test_all_trials_failing_is_an_error_with_the_reason(tuned, cfg, monkeypatch):
    """keras-tuner 1.4.8 fails every TF trial without tensorboard: that must not pass as an empty result."""
    from ddmlflow.pipeline.tune import tune_coarse
    from ddmlflow.tracking import step_run
    from ddmlflow.tuning import TuneFailed

    monkeypatch.setitem(sys.modules, "tensorboard.plugins.hparams", None)  # as if tensorboard were missing
    with mlflow.start_run(run_name="no tensorboard"):
        net = mlflow.MlflowClient().create_run(
            "0", tags={"mlflow.runName": "tune_coarse", "mlflow.parentRunId": mlflow.active_run().info.run_id}
        )
        with pytest.raises(TuneFailed, match=r"all 2 trials failed; first \(trial 0\): .*tensorboard"):
            with step_run(net.info.run_id):
                tune_coarse(
                    cfg, [tuned["runs"]["local/00"], tuned["runs"]["local/01"]], search_options("random", 2, 1, 1)
                )
    trials = children(net.info.run_id)
    assert len(trials) == 2 and all(t.info.status == "FAILED" for t in trials.values())
    assert all("tensorboard" in t.data.tags["failure_reason"] for t in trials.values())
    assert MlflowClient().get_run(net.info.run_id).info.status == "FAILED"


@pytest.mark.slow
def test_killed_search_resumes_without_repeating_finished_trials(tuned, cfg, store):
    """SIGKILL a search while trial 1 runs; rerunning it keeps trial 0 and its run, and finishes trial 1."""
    from ddmlflow.executors import Job
    from ddmlflow.executors.process import command
    from ddmlflow.pipeline.tune import tune_network
    from ddmlflow.tracking import step_run, work_dir

    c = MlflowClient()
    dec = children(tuned["parent"])["decompose"].info.run_id
    opts = search_options("random", 2, 1, 1)
    with mlflow.start_run(run_name="killed") as parent:
        net = c.create_run(
            "0", tags={"mlflow.runName": "tune_local/00", "mlflow.parentRunId": parent.info.run_id}
        ).info.run_id
    argv = command(Job("tune_local", "tune_local/00", net, {"decompose_run": dec, "box": 0, "search": opts}, cfg))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    with open(store / "killed.log", "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        while "trial_1" not in children(net) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)  # trial 1 has started: trial 0 finished, trial 1 is mid-way
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (store / "killed.log").read_text()[-2000:]
    project = work_dir("tuner", net) / "project"
    status = {p.parent.name: json.loads(p.read_text())["status"] for p in project.glob("trial_*/trial.json")}
    assert status == {"trial_0": "COMPLETED", "trial_1": "RUNNING"}, "kill did not land during trial 1"
    before = children(net)
    with mlflow.start_run(run_id=parent.info.run_id), step_run(net):
        tune_network(cfg, dec, opts, box=0)
    after = children(net)
    assert sorted(after) == ["trial_0", "trial_1"]  # the retried trial continued its own run
    assert after["trial_0"].info.run_id == before["trial_0"].info.run_id
    assert after["trial_0"].info.end_time == before["trial_0"].info.end_time  # not run again
    assert after["trial_1"].info.run_id == before["trial_1"].info.run_id
    assert after["trial_1"].info.status == "FINISHED"
    for t in after.values():
        assert [m.step for m in c.get_metric_history(t.info.run_id, "loss")] == [0]
    status = {p.parent.name: json.loads(p.read_text())["status"] for p in project.glob("trial_*/trial.json")}
    assert status == {"trial_0": "COMPLETED", "trial_1": "COMPLETED"}


@pytest.mark.slow
def test_the_coarse_search_stops_on_coarse_patience_like_train_coarse(tuned, cfg, monkeypatch):
    """The coarse net's own stopping rule (``coarse_patience``), not the CNNs' ``patience``."""
    import dataclasses

    import ddmlflow.tuning as tuning
    from ddmlflow.pipeline.tune import tune_coarse

    seen = {}

    def capture(opts, hm, data, epochs, seed):  # the search's training configuration, before any trial
        seen["fit"] = hm.fit_cfg
        raise RuntimeError("captured")

    monkeypatch.setattr(tuning, "search", capture)
    with mlflow.start_run(run_name="coarse patience"), pytest.raises(RuntimeError, match="captured"):
        tune_coarse(
            dataclasses.replace(cfg, patience=0, coarse_patience=3),
            [tuned["runs"]["local/00"], tuned["runs"]["local/01"]],
            search_options("random", 1, 1, 1),
        )
    assert seen["fit"].patience == 3


@pytest.mark.slow
def test_a_trial_trains_as_the_plain_training_does(tuned, cfg):
    """A one-trial search of the configured values trains through the engine of every training: the
    trial's model has the weights ``train_local``'s fit gives with those values (after one epoch)."""
    import numpy as np

    from ddmlflow import models, tuning
    from ddmlflow.pipeline.prepared import load_prepared
    from ddmlflow.training import FitConfig, fit, seed_everything

    prep = load_prepared(children(tuned["parent"])["decompose"].info.run_id)
    box, seed = 1, cfg.seed + 2  # the local's own seed, as train_network and tune_network seed it
    x, y, xv, yv = prep.box(box)
    fc = FitConfig.of(cfg, prep.augment)

    def build(v=None):
        return models.build(
            cfg.model,
            x.shape[1:],
            prep.num_classes,
            width_divisor=cfg.width_divisor,
            name="local_01",
            dropout=cfg.dropout,
        )

    seed_everything(seed)
    plain = build()
    fit(plain, (x, y, xv, yv), prep.num_classes, fc, log_to_mlflow=False)
    fixed = {
        "batch_size": cfg.batch_size,
        "learning_rate": cfg.learning_rate,
        "optimizer": cfg.optimizer,
        "dropout": cfg.dropout,
    }
    space = {"batch_size": {"type": "fixed", "value": cfg.batch_size}}
    hm = tuning.NetworkHyperModel("cnn", space, fixed, build, prep.num_classes, fc, init_seed=seed)
    with mlflow.start_run(run_name="one trial"):
        result = tuning.search(search_options("random", 1, 1, 1), hm, (x, y, xv, yv), 1, seed)
    assert result["trials_completed"] == 1
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(plain.get_weights(), result["model"].get_weights()))
    assert diff < 1e-5
