"""What a step key costs: the data's content digest of a folder, and the code digest of each step.

    python benchmarks/keys.py --data-dir /tmp/cifar10 --rounds 3

Prints one line per figure and, last, the JSON (min/median/max of the rounds, in seconds).
The code digest is timed in a fresh process each round (it is cached per process).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = (
    "import time; from ddmlflow import keys, reuse; t = time.perf_counter(); "
    "[keys.code_digest(tuple(sorted(reuse.code_roots(s)))) for s in "
    "('decompose', 'train_local', 'train_coarse', 'evaluate')]; print(time.perf_counter() - t)"
)


def _stats(xs: list[float]) -> dict:
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("--data-dir", required=True, help="a data folder, e.g. the extracted shared CIFAR-10")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from ddmlflow.keys import data_digest

    data, code, info = [], [], {}
    for _ in range(a.rounds):
        t = time.perf_counter()
        info = data_digest("folder", a.data_dir)
        data.append(time.perf_counter() - t)
        out = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, check=True)
        code.append(float(out.stdout.split()[-1]))
    result = {
        "data_dir": a.data_dir,
        "files": info["files"],
        "bytes": info["bytes"],
        "data_digest_s": _stats(data),
        "code_digest_s": _stats(code),
    }
    print(
        f"data digest: {info['files']:,} files, {info['bytes'] / 2**20:.1f} MiB in "
        f"{result['data_digest_s']['median']:.2f} s (median of {a.rounds})"
    )
    print(f"code digest of four steps: {result['code_digest_s']['median']:.2f} s")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
