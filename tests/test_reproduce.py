"""Named experiments, budgets, `reproduce` under one parent run and `report` from the store alone."""

from __future__ import annotations

import dataclasses
import re

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from ddmlflow import config, experiments, paper_values
from ddmlflow.commands.reproduce import configurations
from ddmlflow.errors import InputError
from ddmlflow.experiments import Budget

TINY = Budget("smoke", n_train=120, n_val=60, epochs=1, coarse_epochs=1, patience=0, note="test")


def test_every_experiment_resolves_and_names_its_paper_rows():
    """Each row is a valid config; KLW/KLW-TL rows have published values to compare with."""
    for name, exp in experiments.EXPERIMENTS.items():
        for run in exp.runs:
            b = experiments.budget("smoke", run.dataset)
            c = config.resolve(run.preset, **run.config_overrides(b))
            assert c.epochs == 1 and c.coarse_epochs == 20
            if exp.paper in ("KLW", "KLW-TL"):
                got = paper_values.lookup(c.dataset, c.model, c.decomposition, c.overlap, exp.paper, exp.table)
                assert {e.row for e in got} == {run.row}, (name, run.name)
    assert [experiments.get("klw-3").runs[i].name for i in range(3)] == [f"cifar10-vgg3-2x2-d{o}" for o in (0, 2, 4)]
    assert [r.run_global for r in experiments.get("klw-3").runs] == [True, False, False]


def test_budgets_are_exact_and_paper_changes_nothing():
    assert experiments.budget("paper", "cifar10").overrides() == {}
    smoke = experiments.budget("smoke", "cifar10").overrides()
    assert smoke == {
        "n_train": "500",
        "n_val": "200",
        "epochs": "1",
        "coarse_epochs": "20",
        "transfer_pretrain_epochs": "1",  # the transfer reuses the locals
        "patience": "0",
    }
    assert "epochs=5" in experiments.budget("cpu", "cifar10").describe()
    # cpu: all of CIFAR-10, epochs per network (one hour per table on the reference machine)
    vgg3, vgg9 = (experiments.budget("cpu", "cifar10", m) for m in ("vgg3", "vgg9"))
    assert vgg3.n_train is None and vgg3.epochs > vgg9.epochs == vgg9.transfer_pretrain_epochs
    assert experiments.budget("cpu", "cifar10", "resnet20a") == experiments.budget("cpu", "cifar10", "resnet20")
    with pytest.raises(InputError, match="budget"):
        experiments.budget("huge", "cifar10")


def test_missing_data_names_where_to_get_it(tmp_path):
    with pytest.raises(InputError, match=r"flower_photos\.tgz") as e:
        configurations("klw-6", "smoke", "")
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="CroppedYale"):
        configurations("klw-9", "smoke", str(tmp_path / "nowhere"))
    (tmp_path / "mosmed").mkdir()
    (tmp_path / "cifar10").mkdir()
    cfgs = configurations(
        "klw-tl-1", "smoke", f"cifar10={tmp_path / 'cifar10'},tf_flowers={tmp_path},mosmed={tmp_path / 'mosmed'}"
    )
    assert [c.data_dir for _, c, _ in cfgs][0] == str(tmp_path / "cifar10")
    assert configurations("klw-10", "smoke", str(tmp_path))[0][1].data_dir == str(tmp_path / "mosmed")
    # the rows of the data one has: no folder asked for the others
    only = configurations("klw-tl-2", "smoke", str(tmp_path / "cifar10"), ("cifar10",))
    assert [r.name for r, _, _ in only] == ["cifar10-vgg9-2x2-d0", "cifar10-resnet20a-2x2-d0"]
    with pytest.raises(InputError, match="data sets of klw-3: cifar10"):
        configurations("klw-3", "smoke", "", ("mosmed",))
    with pytest.raises(InputError, match="table"):
        configurations("klw-99")


@pytest.mark.slow
def test_reproduce_then_rerun_reuses_and_report_reads_the_store(mlflow_env, tmp_path, monkeypatch):
    from ddmlflow.commands.report import report
    from ddmlflow.commands.reproduce import reproduce

    out = reproduce("shapes2d", TINY, out_dir=tmp_path / "r1")
    client = MlflowClient()
    parent = client.get_run(out["parent"])
    assert parent.info.status == "FINISHED" and parent.data.params["budget"] == "smoke"
    assert "n_train=120" in parent.data.params["budget.shapes2d/vgg3"]  # per data set and network
    arts = {a.path for a in client.list_artifacts(out["parent"])}
    assert {"report.md", "report.html", "training_times.png"} <= arts
    fulls = [client.get_run(i) for i in out["runs"].values()]
    assert [f.data.tags["mlflow.parentRunId"] for f in fulls] == [out["parent"]] * 2
    assert [f.data.params["overlap"] for f in fulls] == ["0", "2"]
    md = (tmp_path / "r1" / "report.md").read_text()
    # the second row has no global net of its own: the report takes the first row's
    ev = [client.get_run(f.data.tags["ddmlflow.run.evaluate"]).data.metrics for f in fulls]
    assert "val_accuracy/global" not in ev[1]
    row2 = next(line for line in md.splitlines() if line.startswith("| shapes2d-vgg3-2x2-d2"))
    assert row2.split(" | ")[2].startswith(f"{ev[0]['val_accuracy/global']:.4f}")
    row = next(line for line in md.splitlines() if line.startswith("| shapes2d-vgg3-2x2-d0"))
    assert f"{ev[0]['val_accuracy/cnn_dnn']:.4f}" in row and "| smoke |" in row
    claim = next(line for line in md.splitlines() if "more overlap helps: CNN-DNN" in line)
    a, b = ev[0]["val_accuracy/cnn_dnn"], ev[1]["val_accuracy/cnn_dnn"]
    assert claim.rstrip(" |").endswith("NOT held" if b <= a else "| held")
    assert re.search(r"!\[.*\]\(shapes2d-vgg3-2x2-d0_local_predictions\.png\)", md)
    assert "<table>" in (tmp_path / "r1" / "report.html").read_text()

    n_runs = len(client.search_runs([parent.info.experiment_id], max_results=500))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    again = reproduce("shapes2d", TINY)  # nothing left to run; the report lands in ./reports/<table>-<budget>
    assert again["runs"] == out["runs"]
    assert again["report"] == tmp_path / "cwd" / "reports" / "shapes2d-smoke"
    assert (again["report"] / "report.md").read_text().count("| shapes2d-vgg3-2x2-d") >= 2
    assert len(client.search_runs([parent.info.experiment_id], max_results=500)) == n_runs + 1  # the new parent

    # report on the whole experiment, without any reproduce tag: every `full` run, budget inferred
    rep = report(experiment="Default", out_dir=tmp_path / "r3")
    text = (rep / "report.md").read_text()
    assert text.count("| shapes2d-vgg3-2x2-d") >= 2 and "smoke" in text
    assert mlflow.active_run() is None


def test_estimate_adds_what_each_row_trains():
    from ddmlflow.pipeline.estimate import OVERHEAD_S, Costs, estimate, routes

    c = Costs(
        n_train=1000,
        n_val=200,
        global_train=1e-3,
        global_predict=1e-4,
        locals_train=3e-4,
        locals_predict=4e-5,
        coarse_train=1e-5,
        coherent_train=5e-4,
        coherent_predict=6e-5,
    )
    cfg = config.resolve("", n_train="500", epochs="4", coarse_epochs="10", transfer_pretrain_epochs="4")
    n_all = 500 + 200  # n_val: the data's (the config takes all)
    parts = estimate(cfg, c, run_global=True, strategies=())
    assert parts["global"] == pytest.approx(4 * 500 * 1e-3 + n_all * 1e-4)
    assert parts["locals"] == pytest.approx(4 * 500 * 3e-4 + n_all * 4e-5)
    assert parts["coarse"] == pytest.approx(10 * 500 * 1e-5) and parts["overhead"] == OVERHEAD_S
    assert parts["total"] == pytest.approx(sum(v for k, v in parts.items() if k != "total"))
    assert estimate(cfg, c, run_global=False, strategies=())["global"] == 0.0
    longer = dataclasses.replace(cfg, transfer_pretrain_epochs=8)  # pretrain_local/NN runs of their own
    one_model = 500 * 4 * 5e-4 + n_all * 6e-5  # the CNN-DNN as one model, trained, then predicting once
    assert estimate(longer, c, True, ("transfer",))["strategies"] == pytest.approx(one_model + 500 * 8 * 3e-4)
    assert estimate(cfg, c, True, ("transfer",))["strategies"] == pytest.approx(one_model)
    both = estimate(cfg, c, False, ("cnn_dnn", "coherent", "compose"))["strategies"]
    assert both == pytest.approx(one_model + 500 * 2 * 4 * 1e-3 + n_all * 1e-4)
    assert routes(False, ("cnn_dnn", "coherent")) == ("locals", "coherent")
    assert routes(False, ("compose",)) == routes(True, ()) == ("global", "locals")


@pytest.mark.slow
def test_reproduce_estimate_times_the_rows_here_and_trains_nothing(mlflow_env, capsys):
    from ddmlflow.cli import main

    assert main(["reproduce", "--table", "shapes2d", "--budget", "smoke", "--estimate"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"shapes2d-vgg3-2x2-d0 \[budget smoke.*\]: \d+ s \(global \d+ s, locals \d+ s", err), err
    assert re.search(r"shapes2d, budget smoke: about \d+ s in all", err), err
    assert not MlflowClient().search_runs([e.experiment_id for e in MlflowClient().search_experiments()])
