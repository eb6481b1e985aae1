"""One network's search in a fresh process: ``python -m ddmlflow.tuning_worker --run-id R ...``.

What the executor starts for each ``tune_global`` / ``tune_local/NN`` run
(the step registry will name it; until then this tiny entry keeps cli.py
untouched). The run was created by the parent; it is started here by id, so
the process never inherits the parent's run.
"""
from __future__ import annotations

import argparse
import sys

from .config import from_json
from .devices import watch_driver
from .errors import InputError


def main(argv: list[str] | None = None) -> int:
    watch_driver()
    ap = argparse.ArgumentParser(prog="python -m ddmlflow.tuning_worker", allow_abbrev=False)
    ap.add_argument("--run-id", required=True)
    ap.add_argument("--decompose-run", required=True)
    ap.add_argument("--box", required=True, help="'global' or a box index")
    ap.add_argument("--config", required=True, help="the RunConfig, as config.to_json wrote it")
    ap.add_argument("--options", required=True, help="tuning.TuneOptions, as config.to_json wrote it")
    a = ap.parse_args(argv)
    from .tracking import step_run  # lazy: MLflow; after watch_driver() and the argument check
    from .tuning import TuneFailed, TuneOptions  # lazy: TensorFlow; after watch_driver() and the argument check

    try:
        cfg = from_json(a.config)
        box = None if a.box == "global" else int(a.box)
        from .commands.tune import tune_network  # lazy: TensorFlow; after watch_driver() and the argument check

        with step_run(a.run_id):
            tune_network(cfg, a.decompose_run, box, from_json(a.options, TuneOptions))
    except (InputError, TuneFailed) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)  # the last log line: the executor's reason
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
