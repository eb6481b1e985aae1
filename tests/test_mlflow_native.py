"""MLflow-native runs (issue 15), checked through MlflowClient on one tiny real `full`.

The module fixture runs `full` twice in one store: the first time local 01 is
SIGKILLed as it starts (a `sitecustomize` on the children's path does it once),
so that parent FAILS; the rerun resumes local 01 and must gather the whole tree
under the new parent. Every other check reads that second, finished tree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version

import numpy as np
import pytest
from e2e_run import store_env

from conftest import ROOT

pytestmark = pytest.mark.slow
TINY = [
    "--n-train",
    "120",
    "--n-val",
    "60",
    "--epochs",
    "1",
    "--coarse-epochs",
    "1",
    "--global",
    "false",
    "--max-parallel",
    "2",
    "--registered-model-name",
    "native-shapes",
    "--executor",
    "process",
]
KILL_LOCAL_01 = """
import json, os, signal, sys
argv = list(getattr(sys, "orig_argv", []))
job = json.loads(argv[argv.index("--job") + 1]) if "--job" in argv else {}
marker = os.environ.get("DDMLFLOW_TEST_KILL_MARKER", "")
if job.get("step") == "train_local" and job["inputs"].get("box") == 1 and marker and not os.path.exists(marker):
    open(marker, "w").close()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _full(env, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ddmlflow.cli", "full", *TINY],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    import mlflow

    tmp = tmp_path_factory.mktemp("native")
    hook = tmp / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_LOCAL_01)
    env = store_env(
        tmp,
        MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="1",
        DDMLFLOW_TEST_KILL_MARKER=str(tmp / "killed"),
        PYTHONPATH=os.pathsep.join([str(hook), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    first = _full(env, tmp)
    assert first.returncode != 0 and "train_local/01: killed by SIGKILL" in first.stderr, first.stderr[-3000:]
    second = _full(env, tmp)
    assert second.returncode == 0, second.stderr[-3000:]
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    c = mlflow.MlflowClient()
    exp = c.get_experiment_by_name("ddmlflow-shapes2d")
    parents = [
        r
        for r in c.search_runs(
            [exp.experiment_id], "tags.`ddmlflow.step` = 'full'", order_by=["attributes.start_time ASC"]
        )
    ]
    children = {
        r.info.run_name: r
        for r in c.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[-1].info.run_id}'")
    }
    yield {"client": c, "exp": exp, "parents": parents, "children": children, "second": second, "tmp": tmp}


LOCALS = [f"train_local/{k:02d}" for k in range(4)]


def test_parents_in_named_experiment_with_descriptive_names_and_tags(tree):
    old, new = tree["parents"]
    assert (old.info.status, new.info.status) == ("FAILED", "FINISHED")
    assert new.info.run_name == "shapes2d-vgg3-2x2-d0"
    assert new.data.tags["ddmlflow.preset"] == "shapes2d-vgg3-2x2" and new.data.tags["ddmlflow.decomposition"] == "2x2"
    assert new.data.tags["ddmlflow.executor"] in ("process", "packed")  # what `auto` chose
    assert not tree["client"].search_runs(["0"]), "nothing may land in the Default experiment"


def test_the_rerun_holds_the_whole_tree_and_the_old_parent_points_to_it(tree):
    c, (old, new), children = tree["client"], tree["parents"], tree["children"]
    assert set(children) == {"decompose", "train_coarse", "evaluate", *LOCALS}
    assert all(r.info.status == "FINISHED" for r in children.values())
    assert c.search_runs([tree["exp"].experiment_id], f"tags.`mlflow.parentRunId` = '{old.info.run_id}'") == []
    assert c.get_run(old.info.run_id).data.tags["ddmlflow.successor"] == new.info.run_id
    resumed = children["train_local/01"]  # the killed run itself, resumed in place, now under the new parent
    assert "SIGKILL" in resumed.data.tags["failure_reason"]
    assert "Adopted from an unfinished earlier parent" in new.data.tags["mlflow.note.content"]
    assert "adopted 5 runs" in tree["second"].stderr


def test_descriptions_hold_the_results_table_and_what_each_child_saw(tree):
    new, children = tree["parents"][1], tree["children"]
    note = new.data.tags["mlflow.note.content"]
    ev = children["evaluate"].data.metrics
    assert "| CNN-DNN |" in note and f"{ev['val_accuracy/cnn_dnn']:.4f}" in note
    assert f"{ev['val_accuracy/avg_prob']:.4f}" in note and f"{ev['val_accuracy/majority_vote']:.4f}" in note
    local = children["train_local/02"].data.tags
    assert "box 2, pixels 16:32,0:16" in local["mlflow.note.content"]
    assert "input shape 16x16x3" in local["mlflow.note.content"] and "device CPU" in local["mlflow.note.content"]
    assert (local["ddmlflow.box"], local["ddmlflow.device"]) == ("2", "CPU")
    assert local["ddmlflow.executor"] == new.data.tags["ddmlflow.executor"] != "auto"  # the executor `auto` chose
    assert "coarse net" in children["train_coarse"].data.tags["mlflow.note.content"]
    cut = children["decompose"].data.tags["mlflow.note.content"]
    assert "`shapes2d`" in cut and "120 training and 60 validation images of shape 32x32x3" in cut
    assert "4 boxes of decomposition `2x2` with overlap 0" in cut


def test_every_training_child_logs_its_datasets(tree):
    children = tree["children"]
    digests = set()
    for name in [*LOCALS, "train_coarse"]:
        inputs = children[name].inputs.dataset_inputs
        contexts = sorted(next(t.value for t in i.tags if t.key == "mlflow.data.context") for i in inputs)
        assert contexts == ["training", "validation"], name
        train = next(i.dataset for i in inputs if any(t.value == "training" for t in i.tags))
        digests.add(train.digest)
        profile = json.loads(train.profile)
        if name.startswith("train_local"):
            assert profile["features_shape"] == [120, 16, 16, 3]
            src = json.loads(train.source)
            assert (src["generator"], src["seed"], src["split"]) == (
                "ddmlflow.data.generated:shapes2d",
                "0",
                "training",
            )
    assert "[16:32,0:16]" in children["train_local/02"].inputs.dataset_inputs[0].dataset.name
    assert len(digests) == 5, "each box (and the coarse features) is different data"


def test_training_children_have_system_metrics(tree):
    for name in LOCALS + ["train_coarse"]:  # the coarse net trains for less than one sampling interval
        keys = tree["children"][name].data.metrics
        assert any(k.startswith("system/cpu_utilization") for k in keys), (name, sorted(keys))


def test_logged_models_are_linked_to_their_runs_with_params_and_metrics(tree):
    c, children = tree["client"], tree["children"]
    models = {m.name: m for m in c.search_logged_models(experiment_ids=[tree["exp"].experiment_id])}
    assert {"local_00", "local_01", "local_02", "local_03", "coarse", "cnn_dnn"} <= set(models)
    for k, name in enumerate(LOCALS):
        run = children[name]
        m = next(m for m in models.values() if m.source_run_id == run.info.run_id)
        assert m.name == f"local_{k:02d}" and m.params["box"] == str(k)
        assert m.model_id in [o.model_id for o in run.outputs.model_outputs]
        final = {x.key: x.value for x in m.metrics}
        assert final["final_val_accuracy"] == pytest.approx(run.data.metrics["final_val_accuracy"])
    assert models["cnn_dnn"].source_run_id == children["evaluate"].info.run_id


def test_registered_version_has_description_tags_and_links_its_logged_model(tree):
    c, children = tree["client"], tree["children"]
    mv = c.get_model_version_by_alias("native-shapes", "champion")
    cnn_dnn = next(m for m in c.search_logged_models(experiment_ids=[tree["exp"].experiment_id]) if m.name == "cnn_dnn")
    # the version's source is the logged model (sqlite stores keep the link there, not in mv.model_id)
    assert mv.source == f"models:/{cnn_dnn.model_id}" and mv.run_id == children["evaluate"].info.run_id
    assert mv.tags["ddmlflow.model_id"] == cnn_dnn.model_id and "native-shapes" in cnn_dnn.tags["mlflow.modelVersions"]
    acc = children["evaluate"].data.metrics["val_accuracy/cnn_dnn"]
    assert f"validation accuracy {acc:.4f}" in mv.description and "decomposition `2x2`" in mv.description
    assert (
        mv.tags["ddmlflow.decomposition"] == "2x2" and mv.tags["ddmlflow.parent_run"] == tree["parents"][1].info.run_id
    )
    assert c.get_registered_model("native-shapes").description


def test_pyfunc_answers_with_class_names_and_a_label(tree):
    import mlflow

    class_names = tree["children"]["decompose"].data.tags["class_names"].split(",")
    model = mlflow.pyfunc.load_model("models:/native-shapes@champion")
    assert [s.name for s in model.metadata.get_output_schema().inputs]  # column specs == ["label", *class_names]
    x = np.random.default_rng(0).random((3, 32, 32, 3), dtype=np.float32)
    out = model.predict(x)
    assert list(out.columns) == ["label", *class_names]
    probs = out[class_names].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert list(out["label"]) == [class_names[k] for k in probs.argmax(1)]


def test_parent_records_the_installed_versions(tree):
    c, new = tree["client"], tree["parents"][1]
    assert new.data.tags["ddmlflow.version.tensorflow"] == version("tensorflow")
    assert new.data.tags["ddmlflow.version.mlflow"] == version("mlflow")
    path = c.download_artifacts(new.info.run_id, "environment.json", str(tree["tmp"]))
    env = json.loads(open(path).read())
    assert env["packages"]["keras"] == version("keras") and "protobuf" in env["packages"]


def test_the_console_shows_progress_and_nothing_of_the_stack(tree):
    """No TensorFlow C++ lines, oneDNN notice, download bars, type-hint warning or Keras epoch lines: the
    output is not a terminal, so the live display prints one line per event."""
    import re

    second = tree["second"]
    chatter = re.compile(r"cuInit|oneDNN|Downloading artifacts|type hints|Epoch [0-9]+/|Successfully registered")
    assert [ln for ln in (second.stdout + second.stderr).splitlines() if chatter.search(ln)] == []
    err = second.stderr
    assert "[ddmlflow] train_local/01: finished after 1 epochs, val_acc " in err
    assert "[ddmlflow] trainings: 1 done, 0 running, 0 failed, 0 waiting" in err
    assert "[ddmlflow] train_coarse: finished after 1 epochs" in err
    _, new = tree["parents"]
    assert new.data.params["gpus"] == "none"  # the value used (`auto` found no GPU), not ''
