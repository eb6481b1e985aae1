"""The exact software a run used: the installed versions of ddmlflow's dependency closure.

``pyproject.toml`` keeps lower bounds (for library users); ``conda.yaml`` pins
the tested versions of the direct dependencies and refers to
``requirements.lock``, the whole closure as tested, which
``python -m ddmlflow.environment > requirements.lock`` writes from the current
environment. Every ``full`` parent run logs ``installed()`` as
``environment.json`` and the direct dependencies as ``ddmlflow.version.*`` tags.
"""

from __future__ import annotations

import platform
import re
import sys
from importlib import metadata
from pathlib import Path

from .tags import version_tag

ROOT = Path(__file__).resolve().parents[1]
# The direct dependencies, as declared in pyproject.toml (read at run time when the source tree is there).
DIRECT = (
    "tensorflow",
    "keras",
    "mlflow",
    "keras-tuner",
    "tensorboard",
    "numpy",
    "scipy",
    "nibabel",
    "model-profiler",
    "pillow",
    "matplotlib",
)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def direct() -> list[str]:
    if sys.version_info < (3, 11):  # no tomllib (requires-python is 3.10): the list kept here
        return list(DIRECT)
    else:
        import tomllib

        try:
            deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
            return [re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0] for d in deps]
        except (OSError, KeyError):
            return list(DIRECT)


def closure(names: list[str]) -> dict[str, str]:
    """Installed version of every package ``names`` need, transitively (markers of this platform only)."""
    from packaging.requirements import Requirement

    out: dict[str, str] = {}
    todo = list(names)
    while todo:
        name = _norm(todo.pop())
        if name in out:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        out[name] = dist.version
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return dict(sorted(out.items()))


def installed() -> dict:
    """Python, platform and the exact versions of the dependency closure."""
    from . import tracking  # lazy: MLflow; writing the lock file must not load it

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "ddmlflow": _version("ddmlflow"),
        "code_version": tracking.code_version(),
        "packages": closure(direct()),
    }


def version_tags(env: dict) -> dict[str, str]:
    tags = {
        version_tag("python"): env["python"],
        version_tag("ddmlflow"): env["ddmlflow"],
        version_tag("code"): env["code_version"],
    }
    for name in direct():
        if _norm(name) in env["packages"]:
            tags[version_tag(_norm(name))] = env["packages"][_norm(name)]
    return tags


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def lock_text() -> str:
    """``requirements.lock``: the closure of pyproject's dependencies, pinned as installed here."""
    head = (
        f"# The tested versions (python {platform.python_version()}, {sys.platform}): the dependency closure of\n"
        "# pyproject.toml. Written by `python -m ddmlflow.environment > requirements.lock`;\n"
        "# tests/test_packaging.py keeps it in step with pyproject.toml and conda.yaml.\n"
    )
    return head + "".join(f"{k}=={v}\n" for k, v in closure(direct()).items())


if __name__ == "__main__":
    sys.stdout.write(lock_text())
