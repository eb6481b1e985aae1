"""Reuse follows content (README "Reuse and resume"), on a real store with real runs.

A finished step is reused only when its key matches: the data's bytes, the
decomposition's boxes, the parameters that change a result, the keys of the
steps it consumes, and the syntax trees of the code it runs. The step here is
a trivial function, so the tests exercise the key and the lookup, not Keras
(``test_claims.py`` runs ``full`` itself).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import mlflow
import numpy as np
import pytest

from conftest import ROOT

# Runs one step with the ddmlflow found on PYTHONPATH; prints "<run id> <reused>".
STEP = """
import sys, mlflow
from ddmlflow import config
from ddmlflow.reuse import Reuse
exp, parent, epochs, force = sys.argv[1:5]
steps = Reuse(config.resolve("", epochs=epochs), parent, exp, force == "1")
run_id = steps.inline("decompose", "decompose", {}, lambda: mlflow.log_metric("ran", 1))
print(run_id, "decompose" in steps.reused)
"""


def _step(package_root, exp: str, parent: str, epochs: str = "1", force: bool = False, **cfg) -> tuple[str, bool]:
    """The step in this process (package_root None) or in a fresh one importing ddmlflow from package_root."""
    if package_root is None:
        from ddmlflow import config
        from ddmlflow.reuse import Reuse

        steps = Reuse(config.resolve("", epochs=epochs, **cfg), parent, exp, force)
        run_id = steps.inline("decompose", "decompose", {}, lambda: mlflow.log_metric("ran", 1))
        reused = "decompose" in steps.reused
    else:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
        env["PYTHONPATH"] = str(package_root)
        out = subprocess.run(
            [sys.executable, "-c", STEP, exp, parent, epochs, "1" if force else "0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        run_id, flag = out.stdout.split()[-2:]
        reused = flag == "True"
    assert mlflow.get_run(run_id).info.status == "FINISHED"
    return run_id, reused


@pytest.fixture
def store(mlflow_env):
    from ddmlflow.tracking import create_child, setup

    exp = setup()
    return exp, create_child(exp, None, "full", "full", "")


def _key(run_id: str) -> dict:
    return json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/key.json"))


def test_same_key_reuses_force_and_a_changed_parameter_do_not(store):
    exp, parent = store
    first, reused = _step(None, exp, parent)
    assert not reused
    assert _step(None, exp, parent) == (first, True)
    forced, reused = _step(None, exp, parent, force=True)
    assert forced != first and not reused  # force=true: a new run, the step ran again
    assert "ran" in mlflow.get_run(forced).data.metrics
    other, reused = _step(None, exp, parent, epochs="2")
    assert other not in (first, forced) and not reused
    assert _step(None, exp, parent, epochs="2") == (other, True)
    mixed, reused = _step(None, exp, parent, precision="mixed_bfloat16")  # another compute dtype, other weights
    assert mixed not in (first, forced, other) and not reused
    key = _key(first)  # what the key holds, for a user asking why a step was (not) reused
    assert key["step"] == "decompose" and key["params"]["epochs"] == "1" and key["params"]["decomposition"] == "A:2x2"
    assert key["params"]["precision"] == "float32" and _key(mixed)["params"]["precision"] == "mixed_bfloat16"
    assert key["data"] == {"dataset": "shapes2d", "source": "generated"} and "data_dir" not in key["params"]
    assert mlflow.get_run(first).data.tags["ddmlflow.step_key"] == key["key"]
    assert not mlflow.MlflowClient().search_registered_models()  # every claim released


def test_code_keys_follow_statements_not_docstrings_comments_or_unrelated_modules(store, tmp_path):
    exp, parent = store
    first, _ = _step(None, exp, parent)
    copy = tmp_path / "pkg"
    shutil.copytree(ROOT / "ddmlflow", copy / "ddmlflow", ignore=shutil.ignore_patterns("__pycache__"))
    assert _step(copy, exp, parent) == (first, True)  # the same source elsewhere: the same key
    module = copy / "ddmlflow" / "decomposition" / "boxes.py"  # a module decompose runs
    text = module.read_text()
    module.write_text(
        text.replace(
            '"""Pixels ``start[a] <= i < stop[a]``', '"""Reworded: pixels ``start[a] <= i < stop[a]``'
        ).replace("\nclass Box:", "\n# a new comment\n\n\nclass Box:")
    )
    assert module.read_text() != text
    assert _step(copy, exp, parent) == (first, True)  # docstring, comment and blank lines: reused
    (copy / "ddmlflow" / "tables.py").write_text((copy / "ddmlflow" / "tables.py").read_text() + "\nUNUSED = 1\n")
    assert _step(copy, exp, parent) == (first, True)  # a module decompose does not run: reused
    module.write_text(module.read_text() + "\nUNUSED = 1\n")
    changed, reused = _step(copy, exp, parent)
    assert changed != first and not reused
    assert _key(changed)["code"] != _key(first)["code"] and _key(changed)["params"] == _key(first)["params"]


def _folder(root, classes: dict[str, int], seed: int = 0):
    """A class-per-folder tree of 16x16 PNGs (random pixels, one file per sample)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, n in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / name / f"{i:03d}.png")
    return root


def test_data_content_under_the_same_folder_is_in_the_key_its_path_is_not(store, tmp_path):
    exp, parent = store
    data = _folder(tmp_path / "data", {"cats": 6, "dogs": 6})
    kw = dict(dataset="folder", data_dir=str(data), image_size="16,16")
    first, _ = _step(None, exp, parent, **kw)
    assert _step(None, exp, parent, **kw) == (first, True)
    moved = tmp_path / "elsewhere"
    shutil.copytree(data, moved)
    assert _step(None, exp, parent, **{**kw, "data_dir": str(moved)}) == (first, True)  # same bytes, other path
    os.rename(data / "cats", data / "tmp")  # swap the two classes' folders: same files, other labels
    os.rename(data / "dogs", data / "cats")
    os.rename(data / "tmp", data / "dogs")
    swapped, reused = _step(None, exp, parent, **kw)
    assert swapped != first and not reused
    _folder(tmp_path / "more", {"dogs": 3}, seed=1)
    shutil.copy(tmp_path / "more" / "dogs" / "000.png", data / "dogs" / "new.png")  # one more image
    grown, reused = _step(None, exp, parent, **kw)
    assert grown not in (first, swapped) and not reused
    assert _key(grown)["data"]["files"] == 13 and _key(swapped)["data"]["files"] == 12


def test_boxes_not_the_json_file_are_in_the_key(store, tmp_path):
    exp, parent = store
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([[0, 0, 20, 20], [12, 12, 32, 32]]))
    first, _ = _step(None, exp, parent, decomposition=str(boxes), overlap="0")
    assert _key(first)["params"]["decomposition"] == '{"boxes":[[0,0,20,20],[12,12,32,32]]}'
    other = tmp_path / "sub" / "same.json"  # the same boxes, spelled as dicts, in another file
    other.parent.mkdir()
    other.write_text(json.dumps({"boxes": [{"start": [0, 0], "stop": [20, 20]}, [12, 12, 32, 32]]}))
    assert _step(None, exp, parent, decomposition=str(other), overlap="0") == (first, True)
    boxes.write_text(json.dumps([[0, 0, 20, 20], [10, 10, 32, 32]]))  # changed boxes in the same file
    changed, reused = _step(None, exp, parent, decomposition=str(boxes), overlap="0")
    assert changed != first and not reused


def test_how_and_where_it_runs_is_in_no_key(store):
    from ddmlflow import config
    from ddmlflow.config import FullOptions, key_params, parse_options
    from ddmlflow.reuse import Reuse

    exp, parent = store
    cfg = config.resolve("", epochs="1")
    a = parse_options(FullOptions, executor="process", gpus="none", max_parallel="2")
    b = parse_options(FullOptions, executor="packed", gpus="0,1", jobs_per_gpu="2", ray_address="auto", force="true")
    assert key_params(a) == key_params(b) and "executor" not in key_params(a)
    steps = Reuse(cfg, parent, exp, force=False)
    assert steps.key("full", {}, cfg, key_params(a)) == steps.key("full", {}, cfg, key_params(b))
    c = parse_options(FullOptions, strategies="cnn_dnn,coherent")
    assert steps.key("full", {}, cfg, key_params(c)) != steps.key("full", {}, cfg, key_params(a))


def test_upstream_keys_not_run_ids_reach_the_key(store):
    from ddmlflow import config
    from ddmlflow.reuse import Reuse

    exp, parent = store
    cfg = config.resolve("", epochs="1")
    steps = Reuse(cfg, parent, exp, force=False)
    dec = steps.inline("decompose", "decompose", {}, lambda: None)
    forced = Reuse(cfg, parent, exp, force=True).inline("decompose", "decompose", {}, lambda: None)
    assert forced != dec  # another run of the same key: the locals' keys do not change
    k1 = steps.key("train_local", {"decompose_run": dec, "box": 1})
    k2 = Reuse(cfg, parent, exp, force=False).key("train_local", {"decompose_run": forced, "box": 1})
    assert k1 == k2 and k1["upstream"]["decompose_run"] == _key(dec)["key"]


# Claims one key in a fresh process, then SIGKILLs itself: a holder gone without releasing it.
HOLD_AND_DIE = """
import os, signal, sys
from ddmlflow.claims import claims
claims().acquire(sys.argv[1], "decompose")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_reusing_a_finished_step_drops_the_claim_a_killed_holder_left_on_it(store):
    """A holder SIGKILLed after its step finished (before it released the claim) leaves a claim nobody
    acquires again: the next command that reuses the finished run removes it, not the registry forever."""
    from ddmlflow import keys
    from ddmlflow.claims import PREFIX
    from ddmlflow.config import resolve
    from ddmlflow.reuse import Reuse

    exp, parent = store
    run_id, _ = _step(None, exp, parent)
    key = keys.digest(Reuse(resolve("", epochs="1"), parent, exp, False).key("decompose", {}))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    died = subprocess.run(
        [sys.executable, "-c", HOLD_AND_DIE, key], env=env, capture_output=True, text=True, timeout=300
    )
    assert died.returncode == -9, died.stderr[-2000:]
    claims = [m.name for m in mlflow.MlflowClient().search_registered_models() if m.name.startswith(PREFIX)]
    assert claims == [PREFIX + key]  # left behind by the dead holder
    assert _step(None, exp, parent) == (run_id, True)  # reused ...
    assert [m.name for m in mlflow.MlflowClient().search_registered_models() if m.name.startswith(PREFIX)] == []
