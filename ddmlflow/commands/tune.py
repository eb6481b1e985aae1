"""Step ``tune`` (KLW sec. 4): search the local nets in parallel, then the coarse net on their probabilities.

KLW tuned the global CNN, O(K * M_CNN) for K parameters and M_CNN points of
the search space, and proposed the cheaper procedure built here: tune each
local net, O(K/p^2 * M_CNN), all at once, then the coarse net on the tuned
locals' probabilities, O(k * M_DNN). Run tree::

    tune (parent: best_hparams.json, costs per target, cost ratio)
      decompose
      tune_global | tune_local/00 .. NN | tune_coarse   (best_hparams.json, probs.npz of the best trial)
        trial_0 .. trial_M                               (hyperparameters, epoch curves, objective)

The network searches reuse the package's step machinery: a finished search
with the same key is reused, an unfinished one is resumed in place (same run,
same keras-tuner project folder). Searches of CNNs are jobs (``steps.SEARCHES``,
``pipeline/tune.py``) submitted to the process executor, pinned like the
trainings; the coarse search runs here.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import mlflow

from .. import devices
from ..config import RunConfig, TuneOptions, parse_options, require_gpu_for
from ..errors import require
from ..executors import Job, open_executor
from ..pipeline.decompose import decompose
from ..pipeline.tune import network_name, tune_coarse
from ..pipeline.tune_cost import log_costs
from ..results import Decomposed
from ..reuse import Reuse
from ..tags import run_tag
from ..tracking import log_params, retry, say, work_dir
from ..tuning import SearchOptions
from .full import run_and_close

TARGETS = ("global", "locals", "coarse", "all")


def run_tune(cfg: RunConfig, opts: TuneOptions) -> dict:
    """``tune`` as a command, in the run the CLI opened; epochs are the config's."""
    return tune(cfg, opts)


def tune(cfg: RunConfig, opts: TuneOptions | None = None, epochs: int | None = None, **given) -> dict:
    """In the active (parent) run: the searches of ``opts.target``, best_hparams.json and the cost figures.

    ``given``: ``TuneOptions`` fields by name when ``opts`` is not given (parsed like the command line's);
    ``epochs`` overrides the config's for every search. ``opts.local_runs`` (training or tune runs that
    logged probs.npz) feed ``target=coarse``.
    """
    opts = opts or parse_options(
        TuneOptions, **{k: ",".join(v) if isinstance(v, (list, tuple)) else v for k, v in given.items()}
    )
    target, local_runs = opts.target, list(opts.local_runs) or None
    require(
        target != "coarse" or bool(local_runs),
        "local_runs",
        "",
        "the local runs whose probabilities the coarse search uses (target=coarse needs them)",
    )
    require_gpu_for(cfg.precision, opts.gpus)
    search = SearchOptions.of(opts, epochs)
    parent = mlflow.active_run().info
    log_params({**cfg.params(), "target": target, **search.key(), "space_file": opts.space})
    # the command's claims end with it, whatever happens
    with Reuse(cfg, parent.run_id, parent.experiment_id, opts.force) as steps:
        t0 = time.time()
        runs: dict[str, str] = {}
        decomposed = None
        if target != "coarse":
            dec, out = steps.inline_result("decompose", "decompose", {}, decompose, cfg)
            decomposed = out if isinstance(out, Decomposed) else Decomposed.from_run(dec)
            boxes: list[int | None] = [None] if target == "global" else list(range(decomposed.n_boxes))
            runs = _search_cnns(steps, cfg, opts, search, dec, boxes)
            if target == "all":
                local_runs = [runs[network_name(b)] for b in boxes]
        if target in ("coarse", "all"):
            runs["coarse"] = steps.inline(
                "tune_coarse",
                "tune_coarse",
                {**search.key(), "local_runs": local_runs},
                tune_coarse,
                cfg,
                local_runs,
                search,
            )
        best = {}
        for run_id in runs.values():
            best.update(_json_artifact(run_id, "best_hparams.json"))
        retry(mlflow.log_dict, best, "best_hparams.json")
        costs = log_costs(runs, cfg, target, decomposed)
        mlflow.set_tags({run_tag(f"tune_{k}"): v for k, v in runs.items()})
        say(
            f"tune {target}: {len(runs)} searches in {time.time() - t0:.0f} s; best values in best_hparams.json "
            f"(use: full -P hparams={parent.run_id})"
        )
        return {"runs": runs, "best": best, "costs": costs, "reused": steps.reused}


def _search_cnns(
    steps: Reuse, cfg: RunConfig, opts: TuneOptions, search: SearchOptions, dec: str, boxes: list[int | None]
) -> dict[str, str]:
    """One job per network search, through the process executor; raises ``StepsFailed`` naming the failures."""
    runs, jobs = {}, []
    for box in boxes:
        name = network_name(box)
        step = "tune_global" if box is None else "tune_local"
        inputs = {"decompose_run": dec, "search": search, **({} if box is None else {"box": box})}
        run_id, done = steps.get(step, f"tune_{name}", {**search.key(), "decompose_run": dec, "box": box})
        runs[name] = run_id
        if not done:
            jobs.append(
                Job(
                    step,
                    f"tune_{name}",
                    run_id,
                    inputs,
                    cfg,
                    log=work_dir("logs", run_id) / "tune.log",
                    device=devices.pin(len(boxes) if box is None else box, list(opts.gpus)),
                )
            )
    if not jobs:
        return runs

    def progress(s: dict) -> None:
        say(f"searches: {s['done']} done, {s['running']} running, {s['failed']} failed, {s['pending']} waiting")

    with open_executor("process", opts) as executor:
        run_and_close(
            executor,
            jobs,
            progress,
            "searches",
            "Rerun the same command to resume them (finished trials are kept).",
            steps.release,
        )
    return runs


def _json_artifact(run_id: str, path: str) -> dict:
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=path, dst_path=tempfile.mkdtemp(dir=work_dir("tmp"))
    )
    return json.loads(Path(local).read_text())
