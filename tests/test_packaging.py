"""The project's files agree with each other: dependencies, MLproject vs CLI, README vs CI."""

from __future__ import annotations

import re

import tomllib
import yaml

from conftest import ROOT
from ddmlflow.cli import build_parser


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req, maxsplit=1)[0].lower()


def test_conda_yaml_pins_the_pyproject_dependencies_to_the_lock_file():
    """pyproject: lower bounds (library users); conda.yaml: the tested versions, exactly, as in requirements.lock."""
    from packaging.requirements import Requirement

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip = [p for p in next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict)) if not p.startswith("-")]
    lock = dict(
        line.split("==")
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert sorted(map(_name, pip)) == sorted(map(_name, deps))
    bounds = {_name(d): Requirement(d) for d in deps}
    for pin in pip:
        name, _, ver = pin.partition("==")
        assert ver, f"{pin}: conda.yaml pins exact versions"
        assert lock[name.lower()] == ver, f"{pin} differs from requirements.lock"
        assert bounds[name.lower()].specifier.contains(ver), f"{pin} is below pyproject's {bounds[name.lower()]}"
    assert "-r requirements.lock" in next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))


def test_lock_file_pins_every_package_exactly():
    from ddmlflow.environment import direct

    lines = [ln for ln in (ROOT / "requirements.lock").read_text().splitlines() if ln and not ln.startswith("#")]
    assert all(re.fullmatch(r"[a-z0-9-]+==[\w.+]+", ln) for ln in lines), "name==version, one a line"
    assert {_name(d) for d in direct()} <= {ln.split("==")[0] for ln in lines}


def test_mlproject_and_entrypoints_are_generated_from_the_schema():
    """No option is declared by hand twice: MLproject and entrypoints/ are exactly what the schema renders."""
    from ddmlflow import mlproject

    assert mlproject.stale() == [], "run `ddmlflow mlproject` to regenerate"


def test_every_step_is_reachable_from_cli_mlproject_and_full():
    from ddmlflow.config import FullOptions, RunConfig, TrackingOptions, options
    from ddmlflow.steps import STEPS, STRATEGIES

    project = yaml.safe_load((ROOT / "MLproject").read_text())
    subparsers = next(a for a in build_parser()._actions if a.dest == "command").choices
    config = {o["param"] for o in options(RunConfig)} | {o["param"] for o in options(TrackingOptions)}
    for step in STEPS.values():
        ep = project["entry_points"][step.entry_point]
        assert set(ep["parameters"]) == config | {i.name for i in step.inputs}, step.name
        script = re.match(r"python (entrypoints/\w+\.py)", ep["command"]).group(1)
        assert f'main(["{step.command}"' in (ROOT / script).read_text()
        dests = {a.dest for a in subparsers[step.command]._actions}
        assert {o["field"] for o in options(RunConfig)} | {i.name for i in step.inputs} <= dests
        assert {o["field"] for o in options(TrackingOptions)} <= dests
        for param in ep["parameters"]:
            assert f"{{{param}}}" in ep["command"], (step.name, param)
        if step.strategy:
            assert step.name in STRATEGIES
    full = project["entry_points"]["full"]["parameters"]
    assert set(full) == config | {o["param"] for o in options(FullOptions)}


def test_full_walks_every_selected_registry_step(monkeypatch):
    """`full` with every strategy visits every registry step (a strategy added to the registry runs)."""
    from ddmlflow.commands import full
    from ddmlflow.config import FullOptions, parse_options
    from ddmlflow.steps import STEPS, STRATEGIES

    opts = parse_options(FullOptions, strategies=",".join(STRATEGIES))
    assert [s.name for s in STEPS.values() if full._selected(s, opts)] == list(STEPS)
    no_global = parse_options(FullOptions, **{"global": "false"})
    assert "train_global" not in [s.name for s in STEPS.values() if full._selected(s, no_global)]


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    test_cmd = next(b for b in blocks if "pytest" in b).strip()
    assert test_cmd in ci


ENTRY_PROBE = """
import os, runpy, sys
sys.argv = ["decompose.py", "--help"]
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit:
    pass
print(sys.modules["ddmlflow"].__file__)
print(os.environ["PYTHONPATH"].split(os.pathsep)[0])
"""


def test_an_entry_point_runs_its_own_checkout(tmp_path):
    """`mlflow run` may reuse an environment whose editable ddmlflow is another checkout (or a deleted
    one): the entry point, and every process it starts, use the checkout it belongs to."""
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "checkout"
    for part in ("ddmlflow", "entrypoints"):
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    script = copy / "entrypoints" / "decompose.py"
    r = subprocess.run(
        [sys.executable, "-c", ENTRY_PROBE.format(script=str(script))],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    module, path = r.stdout.strip().splitlines()[-2:]
    assert module.startswith(str(copy / "ddmlflow")) and path == str(copy)
