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
same keras-tuner project folder). Searches of CNNs run as fresh processes
through the executor, pinned like the trainings; the coarse search runs here.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import mlflow

from .. import devices, models
from ..config import RunConfig, to_json
from ..devices import configure_tensorflow
from ..errors import require
from ..executors import Job, make_executor
from ..models import build_coarse, cnn3d, vgg
from ..pipeline.coarse import coarse_inputs
from ..pipeline.decompose import decompose
from ..pipeline.prepared import load_prepared
from ..pipeline.train import fit_config, log_probs
from ..pipeline.tune_cost import log_costs
from ..profiling import flops_exact
from ..reuse import Reuse
from ..tags import BEST_TRIAL_RUN_TAG, BEST_TRIAL_TAG, BOX_TAG, NETWORK_TAG, run_tag
from ..tracking import log_params, retry, say, work_dir
from ..training import FitConfig, predict_probs, seed_everything
from ..tuning import NetworkHyperModel, default_space, parse_options
from .full import run_and_close

TARGETS = ("global", "locals", "coarse", "all")


def run_tune(cfg: RunConfig, opts) -> dict:
    """``tune`` as a command: ``opts`` is ``config.TuneOptions``; epochs are the config's."""
    local = [r.strip() for r in opts.local_runs.split(",") if r.strip()]
    return tune(cfg, opts.target, opts.tuner, opts.max_trials, opts.executions_per_trial, None, opts.objective,
                opts.space, local_runs=local or None, gpus=",".join(opts.gpus) or "none",
                jobs_per_gpu=opts.jobs_per_gpu, max_parallel=opts.max_parallel, force=opts.force)


def network_name(box: int | None) -> str:
    """The key of a network in best_hparams.json (and of its tune run, after ``tune_``)."""
    return "global" if box is None else f"local/{box:02d}"


def tune(cfg: RunConfig, target: str = "all", tuner: str = "random", max_trials=10, executions_per_trial=1,
         epochs=None, objective: str = "val_accuracy", space: str = "", *, local_runs: list[str] | None = None,
         gpus: str = "auto", jobs_per_gpu: int = 1, max_parallel: int = 1, force: bool = False) -> dict:
    """In the active (parent) run: the searches of ``target``, best_hparams.json and the cost figures.

    ``local_runs`` (training or tune runs that logged probs.npz) feed ``target=coarse``.
    """
    require(target in TARGETS, "target", target, f"one of {', '.join(TARGETS)}")
    require(target != "coarse" or bool(local_runs), "local_runs", "",
            "the local runs whose probabilities the coarse search uses (target=coarse needs them)")
    opts = parse_options(tuner, max_trials, executions_per_trial, epochs, objective, space)
    parent = mlflow.active_run().info
    log_params({**cfg.params(), "target": target, **opts.key(), "space_file": space or ""})
    steps = Reuse(cfg, parent.run_id, parent.experiment_id, force)
    t0 = time.time()
    runs: dict[str, str] = {}
    if target != "coarse":
        dec = steps.inline("decompose", "decompose", {}, decompose, cfg)
        n = int(retry(mlflow.get_run, dec).data.params["n_boxes"])
        boxes = [None] if target == "global" else list(range(n))
        runs = _search_cnns(steps, cfg, opts, dec, boxes, gpus, jobs_per_gpu, max_parallel)
        if target == "all":
            local_runs = [runs[network_name(b)] for b in boxes]
    if target in ("coarse", "all"):
        runs["coarse"] = steps.inline("tune_coarse", "tune_coarse", {**opts.key(), "local_runs": local_runs},
                                      tune_coarse, cfg, local_runs, opts)
    best = {}
    for run_id in runs.values():
        best.update(_json_artifact(run_id, "best_hparams.json"))
    retry(mlflow.log_dict, best, "best_hparams.json")
    costs = log_costs(runs, cfg, opts, target)
    mlflow.set_tags({run_tag(f"tune_{k}"): v for k, v in runs.items()})
    say(f"tune {target}: {len(runs)} searches in {time.time() - t0:.0f} s; best values in best_hparams.json "
        f"(use: full -P hparams={parent.run_id})")
    return {"runs": runs, "best": best, "costs": costs, "reused": steps.reused}


def _search_cnns(steps: Reuse, cfg, opts, dec, boxes, gpus, jobs_per_gpu, max_parallel) -> dict[str, str]:
    """One process per network search, through the executor; raises ``StepsFailed`` naming the failures."""
    gpu_list = devices.parse_gpus(gpus)
    runs, jobs = {}, []
    for box in boxes:
        name = network_name(box)
        step = "tune_global" if box is None else "tune_local"
        run_id, done = steps.get(step, f"tune_{name}", {**opts.key(), "decompose_run": dec, "box": box})
        runs[name] = run_id
        if done:
            continue
        argv = [sys.executable, "-m", "ddmlflow.tuning_worker", "--run-id", run_id, "--decompose-run", dec,
                "--box", "global" if box is None else str(box), "--config", to_json(cfg), "--options", to_json(opts)]
        jobs.append(Job(step, f"tune_{name}", run_id, device=devices.pin(len(boxes) if box is None else box, gpu_list),
                        log=work_dir("logs", run_id) / "tune.log", argv=argv,
                        env={"MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}))
    if not jobs:
        return runs

    def progress(s: dict) -> None:
        say(f"searches: {s['done']} done, {s['running']} running, {s['failed']} failed, {s['pending']} waiting")
    try:
        run_and_close(make_executor("process", jobs_per_gpu, max_parallel), jobs, progress, "searches",
                      "Rerun the same command to resume them (finished trials are kept).")
    finally:
        for job in jobs:
            steps.release(job.run_id)
    return runs


def tune_network(cfg: RunConfig, decompose_run: str, box: int | None, opts) -> dict:
    """In the active run: search the global (``box=None``) or local net ``box``; log best values and probs."""
    from ..tuning import search  # lazy: looked up per call (tests replace tuning.search)

    configure_tensorflow()
    seed = cfg.seed + (0 if box is None else 1 + box)
    seed_everything(seed)
    prep = load_prepared(decompose_run)
    x, y, xv, yv = prep.box(box)
    divisor = 1 if box is None else cfg.width_divisor
    name = network_name(box)
    log_params({**cfg.params(), **opts.key(), "decompose_run": decompose_run, "box": "global" if box is None else box,
                "input_shape": "x".join(map(str, x.shape[1:])), "effective_width_divisor": divisor})
    mlflow.set_tags({BOX_TAG: "global" if box is None else str(box), NETWORK_TAG: name})
    space = opts.space.get("cnn") or default_space("cnn", cfg, model_dropout(cfg.model))
    fixed = {"batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate, "optimizer": cfg.optimizer,
             "dropout": cfg_dropout(cfg)}

    def builder(v: dict):
        return models.build(cfg.model, x.shape[1:], prep.num_classes, width_divisor=divisor,
                            name=name.replace("/", "_"), dropout=v["dropout"])
    epochs = opts.epochs or cfg.epochs
    hm = NetworkHyperModel("cnn", space, fixed, builder, prep.num_classes, fit_config(cfg, seed, prep.augment))
    return _finish(search(opts, hm, (x, y, xv, yv), epochs, seed), name, x, xv)


def tune_coarse(cfg: RunConfig, local_runs: list[str], opts) -> dict:
    """In the active run: search the coarse net on the local runs' probabilities (KLW Table 1)."""
    from ..tuning import search  # lazy: looked up per call (tests replace tuning.search)

    seed_everything(cfg.seed)
    f, y, fv, yv, k = coarse_inputs(local_runs)
    log_params({**cfg.params(), **opts.key(), "local_runs": ",".join(local_runs)})
    mlflow.set_tags({NETWORK_TAG: "coarse"})
    space = opts.space.get("coarse") or default_space("coarse", cfg)
    fixed = {"batch_size": cfg.coarse_batch_size, "learning_rate": cfg.coarse_learning_rate,
             "optimizer": cfg.optimizer, "dropout": cfg.coarse_dropout, "hidden": list(cfg.coarse_hidden)}

    def builder(v: dict):
        return build_coarse(len(local_runs), k, hidden=tuple(int(u) for u in v["hidden"]),
                            dropout=float(v["dropout"]))
    fc = FitConfig(epochs=cfg.coarse_epochs, batch_size=cfg.coarse_batch_size, learning_rate=cfg.coarse_learning_rate,
                   optimizer=cfg.optimizer, patience=cfg.coarse_patience, seed=cfg.seed)  # the coarse net's own rule
    hm = NetworkHyperModel("coarse", space, fixed, builder, k, fc)
    return _finish(search(opts, hm, (f, y, fv, yv), opts.epochs or cfg.coarse_epochs, cfg.seed), "coarse", f, fv)


def _finish(result: dict, name: str, x, xv) -> dict:
    """Log the search's best values, costs and the best model's probabilities into the active run."""
    model = result.pop("model")
    log_probs(predict_probs(model, x), predict_probs(model, xv))
    retry(mlflow.log_dict, {name: result["best_values"]}, "best_hparams.json")
    retry(mlflow.log_metrics, {"best_objective": result["best_score"], "params_count": model.count_params(),
                               "flops_per_sample": flops_exact(model), "trials_completed": result["trials_completed"],
                               "trials_failed": result["trials_failed"], "tune_flops": result["flops_spent"],
                               "tune_time_s": result["time_s"], "tune_epochs": result["epochs_run"],
                               "samples": len(x)})
    mlflow.set_tags({BEST_TRIAL_TAG: result["best_trial"], BEST_TRIAL_RUN_TAG: result["best_run"]})
    say(f"tune_{name}: best trial {result['best_trial']} {result['best_score']:.4f} {result['best_values']}")
    return result


def model_dropout(model: str) -> float:
    """The model's built-in dropout rate (the centre of the default dropout range)."""
    return {"vgg3": vgg.DROPOUT, "vgg9": vgg.DROPOUT, "cnn3d": cnn3d.DROPOUT}.get(model, 0.0)


def cfg_dropout(cfg) -> float | None:
    """The configured CNN dropout (None: the network's own rate)."""
    return cfg.dropout


def _json_artifact(run_id: str, path: str) -> dict:
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                dst_path=tempfile.mkdtemp(dir=work_dir("tmp")))
    return json.loads(Path(local).read_text())

