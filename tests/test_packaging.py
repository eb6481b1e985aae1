"""The project's files agree with each other: dependencies, MLproject vs CLI, README vs CI."""
from __future__ import annotations

import re
import tomllib

import yaml

from conftest import ROOT
from ddmlflow.cli import build_parser


def test_conda_yaml_lists_the_pyproject_dependencies():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert sorted(p for p in pip if p != "-e .") == sorted(deps)


def test_every_entry_point_is_a_thin_script_with_the_cli_parameter_names():
    project = yaml.safe_load((ROOT / "MLproject").read_text())
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    assert {"decompose", "train_global", "train_local", "train_coarse", "evaluate", "full"} <= set(project["entry_points"])
    for name, ep in project["entry_points"].items():
        script = re.match(r"python (entrypoints/\w+\.py)", ep["command"]).group(1)
        assert (ROOT / script).exists()
        cmd = re.search(r'main\(\["([\w-]+)"', (ROOT / script).read_text()).group(1)
        options = {a.dest for a in subparsers[cmd]._actions}
        for param in ep["parameters"]:
            assert f"{{{param}}}" in ep["command"], (name, param)
            dest = {"global": "run_global"}.get(param, param)
            assert dest in options, (name, param)


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    test_cmd = next(b for b in blocks if "pytest" in b).strip()
    assert test_cmd in ci
