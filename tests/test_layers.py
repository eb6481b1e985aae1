"""The layer contract (pyproject.toml, [tool.importlinter]): ``lint-imports`` keeps it, and breaks on an upward import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (pip install -e '.[test]')")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": str(LINT.parent), "PYTHONPATH": str(root)},
    )


def test_the_package_keeps_its_layers_and_has_no_import_cycle():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout and "layers" in r.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """tracking (MLflow I/O, below the steps) importing the step registry: the check names that import."""
    shutil.copytree(ROOT / "ddmlflow", tmp_path / "ddmlflow", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    tracking = tmp_path / "ddmlflow" / "tracking.py"
    tracking.write_text(tracking.read_text() + "\n\ndef _upward():\n    from .steps import STEPS  # noqa\n")
    r = _lint(tmp_path)
    assert r.returncode != 0
    assert "ddmlflow.tracking -> ddmlflow.steps" in r.stdout, r.stdout[-3000:]
