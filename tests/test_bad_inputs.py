"""Bad input, table-driven: one line naming the parameter, exit code 2 (HTTP 400), no traceback.

Covers the CLI (in-process and as a real command), the MLproject through
`mlflow run`, `ddmlflow predict`, and the registered pyfunc behind
`mlflow models serve`.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from ddmlflow.cli import main

FAST = ["--n-train", "24", "--n-val", "12"]

# (argv, the parameter the message must name)
CLI_CASES = [
    (["full", "--epochs", "0"], "epochs"),
    (["full", "--epochs", "ten"], "epochs"),
    (["full", "--batch-size", "-1"], "batch_size"),
    (["full", "--learning-rate", "5"], "learning_rate"),
    (["full", "--learning-rate", "0"], "learning_rate"),
    (["full", "--dataset", "imagenet"], "dataset"),
    (["full", "--model", "vgg16"], "model"),
    (["full", "--preset", "cifar100-vgg3"], "preset"),
    (["full", "--strategies", "cnn_dnn,magic"], "strategies"),
    (["full", "--decomposition", "2by2"], "decomposition"),
    (["full", "--overlap", "-1"], "overlap"),
    (["full", "--gpus", "first"], "gpus"),
    (["full", "--jobs-per-gpu", "0"], "jobs_per_gpu"),
    (["full", "--max-parallel", "two"], "max_parallel"),
    (["full", "--force", "maybe"], "force"),
    (["full", "--global", "perhaps"], "global"),
    (["full", "--coarse-hidden", "128,abc"], "coarse_hidden"),
    (["full", "--coarse-dropout", "1.5"], "coarse_dropout"),
    (["full", "--optimizer", "adamw"], "optimizer"),
    (["full", "--seed", "-3"], "seed"),
    (["full", "--precision", "float16"], "precision"),
    (["full", "--precision", "mixed_float16", "--gpus", "none"], "precision"),  # on a CPU: float16 is emulated
    (["full", "--image-size", "0"], "image_size"),
    (["full", "--dataset", "folder"], "data_dir"),
    (["full", "--frobnicate", "1"], "frobnicate='1': not a parameter of full"),
    (["full", "--epoch", "3"], "epoch='3': not a parameter of full; did you mean epochs?"),  # no prefix matching
    (["train-local", "--decompose-run", "x", "--box", "0", "--bo", "1"], "did you mean box?"),
    (["decompose", "--decomposition", "0x0", *FAST], "decomposition"),
    (["decompose", "--decomposition", "64x64", *FAST], "decomposition"),
    (["decompose", "--decomposition", "2x2x2", *FAST], "decomposition"),
    (["decompose", "--overlap", "20", *FAST], "overlap"),
    (["decompose", "--dataset", "folder", "--data-dir", "/no/such/folder"], "data_dir"),
    (["train-coarse", "--local-runs", "0123456789abcdef0123456789abcdef"], "local_runs"),
    (["train-local", "--decompose-run", "feedfacefeedfacefeedfacefeedface", "--box", "0"], "decompose_run"),
    (["predict", "--model", "models:/no-such-model@champion", "x.png"], "model"),
]


@pytest.mark.parametrize("argv,param", CLI_CASES, ids=[" ".join(a[:3]) for a, _ in CLI_CASES])
def test_cli_rejects(argv, param, mlflow_env, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("ddmlflow: error: ") and param in err[-1], err
    assert not any("Traceback" in line for line in err)


def test_folder_errors_name_the_problem(mlflow_env, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["decompose", "--dataset", "folder", "--data-dir", str(empty)]) == 2
    assert "data_dir" in capsys.readouterr().err
    tree = tmp_path / "tree"
    for c in ("a", "b"):
        (tree / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tree / c / f"{i}.png")
    (tree / "b" / "broken.png").write_bytes(b"not a png")
    assert main(["decompose", "--dataset", "folder", "--data-dir", str(tree)]) == 2
    assert "broken.png" in capsys.readouterr().err


def test_failed_step_run_is_marked_failed_with_reason(mlflow_env, capsys):
    import mlflow

    assert main(["decompose", "--decomposition", "64x64", *FAST]) == 2
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert "decomposition" in runs[0].data.tags["failure_reason"]


def test_debug_shows_the_traceback(mlflow_env):
    from ddmlflow.errors import InputError

    with pytest.raises(InputError):
        main(["--debug", "full", "--epochs", "0"])


def test_real_command_exit_code_and_one_line(mlflow_env):
    r = subprocess.run(
        [sys.executable, "-m", "ddmlflow.cli", "full", "--learning-rate", "-0.1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == "ddmlflow: error: learning_rate='-0.1': a number in (0.0, 1.0]"
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_mlproject_rejects_and_marks_run_failed(mlflow_env):
    import mlflow

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    r = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "full", "--env-manager", "local", "-P", "epochs=-5"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode != 0
    assert "ddmlflow: error: epochs='-5': an integer >= 1" in r.stderr
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert [x.info.status for x in runs] == ["FAILED", "FAILED"]
    # the failure lands where the run would have been: its experiment, its name, with the reason
    (failed,) = [x for x in runs if x.info.experiment_id != "0"]
    (launcher,) = [x for x in runs if x.info.experiment_id == "0"]
    assert mlflow.get_experiment(failed.info.experiment_id).name == "ddmlflow-shapes2d"
    from ddmlflow import config, describe

    assert (
        failed.info.run_name == describe.parent_name(config.resolve()) and failed.data.tags["ddmlflow.step"] == "full"
    )
    assert "epochs" in failed.data.tags["failure_reason"] and "epochs" in launcher.data.tags["failure_reason"]
    assert launcher.data.tags["ddmlflow.successor"] == failed.info.run_id


# ---- the registered pyfunc: `ddmlflow predict` and `mlflow models serve` ----


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A real CNN-DNN pyfunc of tiny untrained nets, registered in its own store."""
    import keras
    import mlflow

    from ddmlflow import decomposition, models
    from ddmlflow.serving import log_cnn_dnn, register

    tmp = tmp_path_factory.mktemp("pyfunc")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("Default")
    dec = decomposition.make("2x2", (16, 16, 3))
    paths = []
    for i in range(dec.n):
        net = keras.Sequential(
            [keras.Input(dec.input_shape(i)), keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")]
        )
        paths.append(tmp / f"l{i}.keras")
        net.save(paths[-1])
    models.build_coarse(dec.n, 3, hidden=(8,)).save(tmp / "c.keras")
    with mlflow.start_run():
        model_uri = log_cnn_dnn(paths, tmp / "c.keras", dec, ["a", "b", "c"], np.zeros((2, 16, 16, 3)), tmp)
        register(model_uri, "tiny", 0.5)
    yield {"uri": uri, "tmp": tmp}


PREDICT_CASES = [
    ("wrong_shape.npy", np.zeros((8, 8, 3), np.float32), "file"),
    ("nan.npy", np.full((16, 16, 3), np.nan, np.float32), "input: contains NaN or infinite values"),
    (
        "inf.npy",
        np.stack([np.zeros((16, 16, 3)), np.full((16, 16, 3), -np.inf)]).astype(np.float32),
        "input: contains NaN or infinite values",
    ),
    ("empty.npy", np.zeros((0, 16, 16, 3), np.float32), "input: empty batch"),
    ("strings.npy", np.array(["a", "b"]), "file"),
    ("image.txt", None, "file"),
    ("missing.png", "absent", "file"),
]


@pytest.mark.parametrize("name,content,needle", PREDICT_CASES, ids=[c[0] for c in PREDICT_CASES])
def test_predict_rejects(name, content, needle, tiny_model, monkeypatch, capsys):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny_model["uri"])
    mlflow.set_tracking_uri(tiny_model["uri"])
    path = tiny_model["tmp"] / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif content is None:
        path.write_text("hello")
    assert main(["predict", "--model", "models:/tiny@champion", str(path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and name in err and "Traceback" not in err


def test_predict_prints_file_class_probability(tiny_model, monkeypatch, capsys):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny_model["uri"])
    mlflow.set_tracking_uri(tiny_model["uri"])
    png = tiny_model["tmp"] / "ok.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(png)
    assert main(["predict", "--model", "models:/tiny@champion", str(png)]) == 0
    f, cls, p = capsys.readouterr().out.strip().split("\t")
    assert f == str(png) and cls in ("a", "b", "c") and 1 / 3 <= float(p) <= 1


def _one_bad(value: float) -> list:
    """Two good images, one value of the second one replaced."""
    x = np.zeros((2, 16, 16, 3))
    x[1, 3, 4, 0] = value
    return x.tolist()


# what: (payload, what the HTTP 400 body must say). NaN and infinities reach the model and get the
# package's own message (serving.check_input); a wrong shape, strings and an empty batch (JSON [] has no
# shape) are stopped before it by MLflow's signature check, whose message names the expected shape.
SERVED_BAD = {
    "shape": (
        {"inputs": np.zeros((1, 8, 8, 3)).tolist()},
        ["Shape of input (1, 8, 8, 3) does not match expected shape (-1, 16, 16, 3)"],
    ),
    "strings": ({"inputs": [[["x"] * 3] * 16] * 16}, ["could not convert string to float: 'x'"]),
    "nan": ({"inputs": np.full((1, 16, 16, 3), np.nan).tolist()}, ["input: contains NaN or infinite values"]),
    "inf": ({"inputs": _one_bad(np.inf)}, ["input: contains NaN or infinite values"]),
    "-inf": ({"inputs": _one_bad(-np.inf)}, ["input: contains NaN or infinite values"]),
    "empty": ({"inputs": []}, ["Failed to enforce schema of data '[]'", "(-1, 16, 16, 3)"]),
}


@pytest.mark.slow
def test_served_model_answers_400_with_the_reason(tiny_model):
    from conftest import post, served

    with served("models:/tiny@champion", {**os.environ, "MLFLOW_TRACKING_URI": tiny_model["uri"]}) as url:
        ok = np.zeros((1, 16, 16, 3)).tolist()
        assert post(url + "/invocations", {"inputs": ok})[0] == 200
        for what, (payload, reasons) in SERVED_BAD.items():
            status, body = post(url + "/invocations", payload)
            assert status == 400, (what, body)
            assert all(r in body for r in reasons), (what, body[-500:])
