"""The evaluate step's classifier evaluation through MLflow: per-class metrics, confusion matrices, curves.

Route. ``mlflow.models.evaluate(model_type="classifier")`` runs on a table of targets and
predicted labels (its static-dataset form: ``mlflow.data.from_pandas(..., predictions=...)``),
not on the models: they take image tensors, MLflow's default evaluator wants tabular
features, and the training runs logged every probability already, so no network runs twice.
The static form has labels only, no probabilities, so MLflow logs no ROC/PR curve, AUC or
log loss for it. We draw the one-vs-rest ROC and precision-recall curves ourselves (sklearn,
which MLflow's classifier evaluator imports anyway), hand them to MLflow as
``custom_artifacts``, so they sit beside its confusion matrix, and log their macro areas
(``val_cnn_dnn_roc_auc``, ``..._precision_recall_auc``). Majority vote has labels only: no curves.

Names. Each method is one ``evaluate`` call with ``metric_prefix="val_<method>_"``: MLflow's
metrics (``val_cnn_dnn_accuracy_score``, ..._f1_score, weighted averages) and artifacts
(``val_cnn_dnn_confusion_matrix.png``) take the prefix. A prefix with ``/`` would break its
image artifacts (saved into a folder that does not exist), and its ``per_class_metrics.csv``
ignores the prefix, so methods would overwrite it: our subclass (``_classifier``) names it like the rest.
MLflow keeps per-class numbers in that CSV only; we log them as metrics too
(``val_cnn_dnn_recall/<class>``), for the runs table and the logged models.

Links. Every metric names the validation set (dataset ``<data set>-val``, digest over the
labels, an input of the run with context ``validation``) and, where there is one, the
logged model it measures (``model_id``): the CNN-DNN's pyfunc, the global CNN's Keras model.
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow.data.pandas_dataset import from_pandas  # what mlflow.data names at run time (mypy cannot see it)

from .. import figures
from ..tables import LABELS
from ..tracking import retry

MAX_CURVE_CLASSES = 10  # MLflow's own limit for multiclass ROC/PR plots: more lines are unreadable


@dataclass
class Method:
    """One way to classify the validation set: labels, probabilities if it has them, its logged model."""

    name: str  # cnn_dnn, global, avg_prob, majority_vote
    labels: np.ndarray  # (n,) predicted class indices
    probs: np.ndarray | None = None  # (n, K); None: labels only (majority vote)
    model_id: str | None = None  # the LoggedModel the metrics are linked to

    @classmethod
    def from_probs(cls, name: str, probs: np.ndarray, model_id: str | None = None) -> Method:
        p = np.asarray(probs, dtype="float64")
        if p.shape[1] == 1:  # a sigmoid column: [1 - p, p]
            p = np.concatenate([1.0 - p, p], axis=1)
        return cls(name, p.argmax(axis=1), p, model_id)


def confusion(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts: row = true class, column = predicted class."""
    m = np.zeros((k, k), dtype=int)
    np.add.at(m, (np.asarray(y, dtype=int), np.asarray(pred, dtype=int)), 1)
    return m


def per_class(m: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 of each class from a confusion matrix (0 where undefined, as sklearn's
    ``zero_division=0``)."""
    tp = np.diag(m).astype(float)
    div = lambda a, b: np.divide(a, b, out=np.zeros_like(a), where=b > 0)  # noqa: E731
    precision, recall = div(tp, m.sum(axis=0).astype(float)), div(tp, m.sum(axis=1).astype(float))
    return {"precision": precision, "recall": recall, "f1": div(2 * precision * recall, precision + recall)}


def per_class_table(y: np.ndarray, methods: dict[str, np.ndarray], class_names: list[str]) -> str:
    """Markdown: per class, its validation images and each method's recall; the last column is
    CNN-DNN minus average probability, the classes the coarse net fixes (or breaks) over averaging."""
    k = len(class_names)
    recall = {n: per_class(confusion(y, p, k))["recall"] for n, p in methods.items()}
    support = np.bincount(np.asarray(y, dtype=int), minlength=k)
    gain = "cnn_dnn" in recall and "avg_prob" in recall
    head = ["class", "n", *[LABELS.get(n, n) for n in recall]]
    head += [f"{LABELS['cnn_dnn']} - {LABELS['avg_prob']}"] if gain else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c, name in enumerate(class_names):
        cells = [str(name), str(support[c]), *[f"{r[c]:.3f}" for r in recall.values()]]
        if gain:
            cells.append(f"{recall['cnn_dnn'][c] - recall['avg_prob'][c]:+.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nValidation recall per class (share of its images classified right).\n"


def _curves(y: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict[str, dict]:
    """One-vs-rest ROC and PR curves with their areas; classes without positives (or negatives) are left out."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    roc, pr = {}, {}
    for c, name in enumerate(class_names):
        hit = np.asarray(y) == c
        if hit.all() or not hit.any():
            continue
        fpr, tpr, _ = roc_curve(hit, probs[:, c])
        precision, recall, _ = precision_recall_curve(hit, probs[:, c])
        roc[str(name)] = (fpr, tpr, float(roc_auc_score(hit, probs[:, c])))
        pr[str(name)] = (recall, precision, float(average_precision_score(hit, probs[:, c])))
    return {"roc": roc, "pr": pr}


def class_key(name: str) -> str:
    """A class name as a metric-key part (MLflow allows letters, digits, ``_ - . /`` and spaces)."""
    return re.sub(r"[^\w\-. /]", "_", str(name))


def _classifier():
    """MLflow's classifier evaluator, registered under a name of ours, with ``per_class_metrics.csv``
    under the metric prefix like its other artifacts (else each method overwrites the last)."""
    from mlflow.models.evaluation.evaluator_registry import _model_evaluation_registry as registry
    from mlflow.models.evaluation.evaluators.classifier import ClassifierEvaluator

    class _Classifier(ClassifierEvaluator):
        name = "ddmlflow_classifier"

        def _log_pandas_df_artifact(self, pandas_df, artifact_name):
            super()._log_pandas_df_artifact(pandas_df, self.evaluator_config.get("metric_prefix", "") + artifact_name)

    registry.register(_Classifier.name, _Classifier)
    return _Classifier.name


@contextmanager
def _quiet():
    """MLflow's INFO lines during an evaluation (active model set, class count inferred, ...) and
    sklearn's "precision is ill-defined" for a class nobody predicts (it counts as 0, as in our
    metrics) stay off the console; other warnings do not."""
    from sklearn.exceptions import UndefinedMetricWarning

    loggers = [logging.getLogger(n) for n in ("mlflow.models.evaluation", "mlflow.tracking.fluent")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UndefinedMetricWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def validation_dataset(y: np.ndarray, class_names: list[str], name: str, source=None):
    """The validation labels as an MLflow dataset; digest over the labels, so every method's metrics
    (and every run of the same split) name the same dataset."""
    import pandas as pd

    y = np.asarray(y, dtype=int)
    digest = hashlib.sha256(np.ascontiguousarray(y).tobytes()).hexdigest()[:8]
    df = pd.DataFrame({"label": np.asarray(class_names, dtype=object)[y]})
    return df, digest, from_pandas(df, source=source, targets="label", name=name, digest=digest)


def evaluate_classifiers(
    y: np.ndarray, methods: list[Method], class_names: list[str], dataset_name: str, art: Path, source=None
) -> dict[str, dict[str, np.ndarray]]:
    """In the active run: MLflow's classifier evaluation of each method on the validation labels ``y``,
    per-class metrics, curves; ``confusion_matrices.png`` and ``per_class.md``. Returns per-class
    precision/recall/F1 by method.

    Clears MLflow's active model first: MLflow makes a model active when it loads one (as when it
    checks an input example while logging), and ``evaluate`` without a ``model_id`` links to the
    active model, so averaging's metrics would land on the CNN-DNN. Every metric here names its model.
    """
    with _quiet():
        mlflow.clear_active_model()
    k, evaluator = len(class_names), _classifier()
    names = np.asarray([str(c) for c in class_names], dtype=object)
    df, digest, ds = validation_dataset(y, class_names, dataset_name, source)
    retry(mlflow.log_input, ds, context="validation")
    out, matrices = {}, {}
    for m in methods:
        prefix = f"val_{m.name}_"
        table = from_pandas(
            df.assign(prediction=names[m.labels]),
            source=source,
            targets="label",
            predictions="prediction",
            name=dataset_name,
            digest=digest,
        )
        matrices[LABELS.get(m.name, m.name)] = matrix = confusion(y, m.labels, k)
        out[m.name] = scores = per_class(matrix)
        metrics = {
            f"{prefix}{what}/{class_key(c)}": float(v[i]) for what, v in scores.items() for i, c in enumerate(names)
        }
        artifacts = []  # majority vote has no probabilities: no curves, no areas
        curves = _curves(y, m.probs, list(names)) if m.probs is not None else {}
        for kind, (area, plot) in {
            "roc": ("roc_auc", "roc_curve_plot"),
            "pr": ("precision_recall_auc", "precision_recall_curve_plot"),
        }.items():
            if curves.get(kind):  # macro average over the classes, one vs rest
                metrics[prefix + area] = float(np.mean([a for _, _, a in curves[kind].values()]))
                if k <= MAX_CURVE_CLASSES:
                    artifacts.append(_plot(curves[kind], kind, prefix + plot, LABELS.get(m.name, m.name)))
        with _quiet():
            retry(
                mlflow.models.evaluate,
                data=table,
                model_type="classifier",
                evaluators=evaluator,
                model_id=m.model_id,
                custom_artifacts=artifacts or None,
                evaluator_config={
                    "metric_prefix": prefix,
                    "log_model_explainability": False,
                    "label_list": list(names),
                },
            )
        _log_metrics(metrics, m.model_id, table)
    figures.confusion_matrices(matrices, list(names), art / "confusion_matrices.png")
    (art / "per_class.md").write_text(per_class_table(y, {m.name: m.labels for m in methods}, list(names)))
    for f in ("confusion_matrices.png", "per_class.md"):
        retry(mlflow.log_artifact, str(art / f))
    return out


def _log_metrics(metrics: dict[str, float], model_id: str | None, dataset) -> None:
    """Metrics of the active run on ``dataset``, linked to ``model_id`` only: ``mlflow.log_metrics``
    without a model would link them to every model the run logged (the CNN-DNN)."""
    from mlflow.entities import Metric
    from mlflow.utils.time import get_current_time_millis

    run_id, now = mlflow.active_run().info.run_id, get_current_time_millis()
    retry(
        mlflow.MlflowClient().log_batch,
        run_id,
        [
            Metric(
                k, v, now, 0, model_id=model_id, dataset_name=dataset.name, dataset_digest=dataset.digest, run_id=run_id
            )
            for k, v in metrics.items()
        ],
    )


def _plot(curves: dict, kind: str, artifact: str, method: str):
    """A ``custom_artifacts`` function for ``mlflow.models.evaluate``: the figure, saved by MLflow as
    ``<artifact>.png``."""

    def draw(eval_df, builtin_metrics, artifacts_dir):
        title = f"{method}: {'ROC' if kind == 'roc' else 'precision-recall'} curves, one vs rest"
        path = Path(artifacts_dir) / f"{artifact}.png"
        figures.one_vs_rest(curves, kind, path, title)
        return {artifact: str(path)}

    draw.__name__ = artifact
    return draw
