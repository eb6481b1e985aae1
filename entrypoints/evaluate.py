"""MLproject entry point `evaluate`: a thin wrapper over `ddmlflow evaluate`."""

import os
import sys
from pathlib import Path

# This checkout's ddmlflow, for this process and the ones it starts: an environment that
# `mlflow run` reuses may hold an editable install of another (or a deleted) checkout.
ROOT = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)

from ddmlflow.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
