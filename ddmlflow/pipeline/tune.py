"""The search steps of ``tune`` (KLW sec. 4): one network's keras-tuner search into its run.

``tune_network`` searches the global CNN (``box=None``) or one local CNN; the
``tune`` command submits one per network as a job (``steps.SEARCHES``), so it
runs where trainings run, through the same worker entry point. ``tune_coarse``
searches the coarse net on the tuned locals' probabilities, in the parent.
Each logs ``best_hparams.json``, its cost figures and the best model's
probabilities (what ``tune_coarse`` and ``full -P hparams=`` read).
"""

from __future__ import annotations

import mlflow

from .. import models, tuning  # tuning.search looked up per call (tests replace it)
from ..devices import configure_tensorflow
from ..inference import predict_probs
from ..models import build_coarse, cnn3d, vgg
from ..profiling import flops_exact
from ..search_space import default_space
from ..tags import BEST_TRIAL_RUN_TAG, BEST_TRIAL_TAG, BOX_TAG, NETWORK_TAG
from ..tracking import log_params, retry, say
from ..training import FitConfig, seed_everything
from ..tuning import NetworkHyperModel, SearchOptions
from .coarse import coarse_inputs
from .prepared import load_prepared
from .train import log_probs


def network_name(box: int | None) -> str:
    """The key of a network in best_hparams.json (and of its tune run, after ``tune_``)."""
    return "global" if box is None else f"local/{box:02d}"


def tune_network(cfg, decompose_run: str, search: SearchOptions, box: int | None = None) -> dict:
    """In the active run: search the global (``box=None``) or local net ``box``; log best values and probs."""
    configure_tensorflow()
    seed = cfg.seed + (0 if box is None else 1 + box)
    seed_everything(seed)
    prep = load_prepared(decompose_run)
    x, y, xv, yv = prep.box(box)
    divisor = 1 if box is None else cfg.width_divisor
    name = network_name(box)
    log_params(
        {
            **cfg.params(),
            **search.key(),
            "decompose_run": decompose_run,
            "box": "global" if box is None else box,
            "input_shape": "x".join(map(str, x.shape[1:])),
            "effective_width_divisor": divisor,
        }
    )
    mlflow.set_tags({BOX_TAG: "global" if box is None else str(box), NETWORK_TAG: name})
    space = search.space.get("cnn") or default_space("cnn", cfg, model_dropout(cfg.model))
    fixed = {
        "batch_size": cfg.batch_size,
        "learning_rate": cfg.learning_rate,
        "optimizer": cfg.optimizer,
        "dropout": cfg.dropout,
    }

    def builder(v: dict):
        return models.build(
            cfg.model,
            x.shape[1:],
            prep.num_classes,
            width_divisor=divisor,
            name=name.replace("/", "_"),
            dropout=v["dropout"],
        )

    epochs = search.epochs or cfg.epochs
    # as train_network trains: the batches' seed is the config's, the weights' the network's own
    fc = FitConfig.of(cfg, prep.augment)
    hm = NetworkHyperModel(
        "cnn", space, fixed, builder, prep.num_classes, fc, lambda f: prep.augmented_train(box, f), init_seed=seed
    )
    return _finish(tuning.search(search, hm, (x, y, xv, yv), epochs, seed), name, x, xv)


def tune_coarse(cfg, local_runs: list[str], search: SearchOptions) -> dict:
    """In the active run: search the coarse net on the local runs' probabilities (KLW Table 1)."""
    seed_everything(cfg.seed)
    f, y, fv, yv, k = coarse_inputs(local_runs)
    log_params({**cfg.params(), **search.key(), "local_runs": ",".join(local_runs)})
    mlflow.set_tags({NETWORK_TAG: "coarse"})
    space = search.space.get("coarse") or default_space("coarse", cfg)
    fixed = {
        "batch_size": cfg.coarse_batch_size,
        "learning_rate": cfg.coarse_learning_rate,
        "optimizer": cfg.optimizer,
        "dropout": cfg.coarse_dropout,
        "hidden": list(cfg.coarse_hidden),
    }

    def builder(v: dict):
        return build_coarse(len(local_runs), k, hidden=tuple(int(u) for u in v["hidden"]), dropout=float(v["dropout"]))

    fc = FitConfig.coarse(cfg)  # the coarse net's own rule, as train_coarse
    hm = NetworkHyperModel("coarse", space, fixed, builder, k, fc, init_seed=cfg.seed)
    return _finish(
        tuning.search(search, hm, (f, y, fv, yv), search.epochs or cfg.coarse_epochs, cfg.seed), "coarse", f, fv
    )


def _finish(result: dict, name: str, x, xv) -> dict:
    """Log the search's best values, costs and the best model's probabilities into the active run."""
    model = result.pop("model")
    log_probs(predict_probs(model, x), predict_probs(model, xv))
    retry(mlflow.log_dict, {name: result["best_values"]}, "best_hparams.json")
    retry(
        mlflow.log_metrics,
        {
            "best_objective": result["best_score"],
            "params_count": model.count_params(),
            "flops_per_sample": flops_exact(model),
            "trials_completed": result["trials_completed"],
            "trials_failed": result["trials_failed"],
            "tune_flops": result["flops_spent"],
            "tune_time_s": result["time_s"],
            "tune_epochs": result["epochs_run"],
            "samples": len(x),
        },
    )
    mlflow.set_tags({BEST_TRIAL_TAG: result["best_trial"], BEST_TRIAL_RUN_TAG: result["best_run"]})
    say(f"tune_{name}: best trial {result['best_trial']} {result['best_score']:.4f} {result['best_values']}")
    return result


def model_dropout(model: str) -> float:
    """The model's built-in dropout rate (the centre of the default dropout range)."""
    return {"vgg3": vgg.DROPOUT, "vgg9": vgg.DROPOUT, "cnn3d": cnn3d.DROPOUT}.get(model, 0.0)
