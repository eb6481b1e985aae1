"""Step 4: compare the CNN-DNN with the global CNN and the cheap aggregations; register it.

Everything is computed from the probabilities the training runs logged, so no
network is evaluated twice. The composed CNN-DNN is logged as a pyfunc that
takes whole images, then MLflow's classifier evaluation of the CNN-DNN, the
global CNN, average probability and majority vote on the validation set
(``classifier_eval``: per-class metrics linked to the logged models, confusion
matrices, curves), then the CNN-DNN is registered (``champion`` unless worse).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np

from .. import aggregate, describe, figures, tables
from ..config import RunConfig
from ..inference import accuracy
from ..results import Evaluation
from ..serving import log_cnn_dnn, model_id, register
from ..tags import (
    EXECUTOR_TAG,
    MODEL_ID_TAG,
    MODEL_URI_TAG,
    NOTE_TAG,
    PARENT_RUN_TAG,
    PARENT_TAG,
    REGISTERED_MODEL_TAG,
    REGISTERED_VERSION_TAG,
    SOURCE_RUN_TAG,
    SPEEDUP_EXECUTORS_TAG,
)
from ..tracking import get_run, log_params, retry, say, work_dir
from .classifier_eval import Method, evaluate_classifiers
from .finish import DataSource
from .prepared import load_prepared
from .train import load_probs, logged_keras_archive


def _metric(run_id: str, key: str) -> float:
    return float(get_run(run_id).data.metrics.get(key, float("nan")))


def compare(
    y: np.ndarray,
    local: list[np.ndarray],
    cnn_dnn: np.ndarray,
    glob: np.ndarray | None,
    extra: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Accuracy of every way to classify one split (labels ``y``)."""
    accs = [accuracy(p, y) for p in local]
    out = {
        "local_mean": float(np.mean(accs)),
        "local_min": float(np.min(accs)),
        "local_max": float(np.max(accs)),
        "cnn_dnn": accuracy(cnn_dnn, y),
        **{name: float(np.mean(rule.labels(local) == y)) for name, rule in aggregate.RULES.items()},
    }
    if glob is not None:
        out["global"] = accuracy(glob, y)
    for name, p in (extra or {}).items():
        out[name] = accuracy(p, y)
    return out


def evaluate(
    cfg: RunConfig,
    decompose_run: str,
    local_runs: list[str],
    coarse_run: str,
    global_run: str | None = None,
    registered_model_name: str = "",
    strategy_runs: dict[str, str] | None = None,
) -> Evaluation:
    """In the active run: metrics, ``results.json``, table, figures, registered pyfunc."""
    log_params(
        {
            **cfg.params(),
            "decompose_run": decompose_run,
            "local_runs": ",".join(local_runs),
            "coarse_run": coarse_run,
            "global_run": global_run or "",
        }
    )
    prep = load_prepared(decompose_run)
    y, yv = np.asarray(prep.y_train), np.asarray(prep.y_val)
    local = [load_probs(r) for r in local_runs]
    coarse = load_probs(coarse_run)
    glob = load_probs(global_run) if global_run else None
    extra = {s: load_probs(r) for s, r in (strategy_runs or {}).items()}
    results: dict[str, float] = {}
    for split, labels, j in (("train_accuracy", y, 0), ("val_accuracy", yv, 1)):
        accs = compare(
            labels,
            [p[j] for p in local],
            coarse[j],
            None if glob is None else glob[j],
            {s: p[j] for s, p in extra.items()},
        )
        results.update({f"{split}/{k}": v for k, v in accs.items()})
    times = {
        "slowest local": max(_metric(r, "train_time_s") for r in local_runs),
        "coarse": _metric(coarse_run, "train_time_s"),
    }
    times["CNN-DNN"] = times["slowest local"] + times["coarse"]
    if global_run:
        times = {"global CNN": _metric(global_run, "train_time_s"), **times}
        results["speedup"] = times["global CNN"] / times["CNN-DNN"]
        executor = {get_run(r).data.tags.get(EXECUTOR_TAG, "") for r in [global_run, *local_runs]}
        mlflow.set_tag(SPEEDUP_EXECUTORS_TAG, ",".join(sorted(executor - {""})) or "unknown")
    art = Path(tempfile.mkdtemp(dir=work_dir("tmp")))
    table = tables.results_table(
        results, f"{prep.decomposition.spec}, overlap {prep.decomposition.overlap}", tuple(extra)
    )
    (art / "results.md").write_text(table)
    (art / "results.json").write_text(json.dumps({"results": results, "train_times_s": times}, indent=1))
    figures.training_times(times, art / "training_times.png")
    figures.local_predictions(
        np.asarray(prep.x_val[:4]),
        yv[:4],
        prep.decomposition,
        [p[1][:4] for p in local],
        prep.class_names,
        art / "local_predictions.png",
    )
    for f in ("results.md", "results.json", "training_times.png", "local_predictions.png"):
        retry(mlflow.log_artifact, str(art / f))
    print(table)
    uri: str | None = None
    tags: dict = {}
    if registered_model_name != "-":  # logged first: the classifier evaluation links its metrics to it
        uri, tags = _log_cnn_dnn(cfg, prep, local_runs, coarse_run, results, art)
    else:
        retry(mlflow.log_metrics, results)
    vp = [p[1] for p in local]
    methods = [
        Method.from_probs("cnn_dnn", coarse[1], uri and model_id(uri)),
        *(
            Method.from_probs(name, rule.fn(vp)) if rule.probabilities else Method(name, rule.fn(vp))
            for name, rule in aggregate.RULES.items()
        ),
    ]
    if glob is not None:
        methods.append(Method.from_probs("global", glob[1], model_id(get_run(global_run).data.tags[MODEL_URI_TAG])))
    evaluate_classifiers(
        yv,
        methods,
        prep.class_names,
        f"{prep.dataset}-val",
        art,
        DataSource(decompose_run=decompose_run, split="validation", n=len(yv)),
    )
    per_class = (art / "per_class.md").read_text()
    mlflow.set_tag(NOTE_TAG, table + "\n" + per_class)
    registered = {}
    if uri:
        registered = _register(cfg, uri, registered_model_name or f"ddmlflow-{prep.dataset}", results, tags)
    return Evaluation(mlflow.active_run().info.run_id, results, table, per_class, registered)


def _log_cnn_dnn(cfg: RunConfig, prep, local_runs, coarse_run, results: dict, art: Path) -> tuple[str, dict]:
    """Log the composed CNN-DNN (a logged model with the run's params and results); its URI and tags."""
    paths = [logged_keras_archive(r, art / f"local_{i:02d}") for i, r in enumerate(local_runs)]
    coarse_path = logged_keras_archive(coarse_run, art / "coarse")
    run = mlflow.active_run()
    tags = {
        **describe.cfg_tags(cfg),
        SOURCE_RUN_TAG: run.info.run_id,
        PARENT_RUN_TAG: run.data.tags.get(PARENT_TAG, ""),
    }
    uri = log_cnn_dnn(
        paths,
        coarse_path,
        prep.decomposition,
        prep.class_names,
        np.asarray(prep.x_val[:2]),
        art,
        params={**cfg.params(), "local_runs": ",".join(local_runs), "coarse_run": coarse_run},
        tags=tags,
    )
    retry(mlflow.log_metrics, results, model_id=model_id(uri))
    return uri, tags


def _register(cfg: RunConfig, uri: str, name: str, results: dict, tags: dict) -> dict:
    """Register the logged CNN-DNN; ``champion`` unless worse than the current one."""
    val_acc = results["val_accuracy/cnn_dnn"]
    run = mlflow.active_run()
    note = describe.model_note(name, cfg.params(), run.info.run_id, tags[PARENT_RUN_TAG], val_acc)
    reg = register(uri, name, val_acc, description=note, tags={**tags, MODEL_ID_TAG: model_id(uri)})
    mlflow.set_tags({REGISTERED_MODEL_TAG: name, REGISTERED_VERSION_TAG: reg["version"]})
    say(f"registered {name} version {reg['version']}" + (" (champion)" if reg["champion"] else ""))
    return reg
