"""The `ddmlflow` command's read-only subcommands: profile (KLW Table 2) and presets."""

from __future__ import annotations

import json

import pytest

from conftest import experiment_ids
from ddmlflow.cli import main


def test_profile_prints_the_table2_row(capsys):
    assert main(["profile", "--preset", "cifar10-vgg3-2x2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert (rows["global"]["params"], rows["local"]["params"]) == (550570, 89178)
    assert (rows["global"]["paper_mflops"], rows["local"]["paper_mflops"]) == (0.7779, 0.0497)
    assert rows["global"]["flops"] == 77_794_378 and rows["local"]["tteval_ms"] > 0


def test_presets_list_and_show(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) >= 30 and any(line.startswith("flowers-vgg9-typeB") for line in lines)
    assert main(["presets", "ct-3d-4x4x2"]) == 0
    shown = capsys.readouterr().out
    assert "decomposition: 4x4x2" in shown and "learning_rate: 0.0001" in shown
    assert main(["presets", "nope"]) == 2
    assert "preset" in capsys.readouterr().err


@pytest.mark.slow
def test_each_step_runs_alone_given_its_inputs(mlflow_env, capsys):
    import mlflow

    tiny = ["--n-train", "48", "--n-val", "24", "--epochs", "1", "--coarse-epochs", "2"]
    c = mlflow.MlflowClient()

    def newest(name):
        return next(
            r
            for r in c.search_runs(experiment_ids(c), order_by=["attributes.start_time DESC"])
            if r.info.run_name == name
        ).info.run_id

    assert main(["decompose", *tiny]) == 0
    dec = newest("decompose")
    for k in range(4):
        assert main(["train-local", "--decompose-run", dec, "--box", str(k), *tiny]) == 0
    local = ",".join(newest(f"train_local/{k:02d}") for k in range(4))
    assert main(["train-coarse", "--local-runs", local, *tiny]) == 0
    coarse = newest("train_coarse")
    assert (
        main(
            [
                "evaluate",
                "--decompose-run",
                dec,
                "--local-runs",
                local,
                "--coarse-run",
                coarse,
                "--registered-model-name",
                "alone",
                *tiny,
            ]
        )
        == 0
    )
    ev = c.get_run(newest("evaluate"))
    assert ev.info.status == "FINISHED" and "val_accuracy/cnn_dnn" in ev.data.metrics
    assert "val_accuracy/global" not in ev.data.metrics  # no global run was given
    assert int(c.get_model_version_by_alias("alone", "champion").version) == 1
    assert "| 2x2, overlap 0 |" in capsys.readouterr().out
