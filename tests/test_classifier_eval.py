"""The evaluate step's classifier evaluation: per-class numbers on hand-made labels, then MLflow's side on tiny arrays.

The hand-made case: 3 classes, 2 images each. Averaging the local probabilities gets
class 2 wrong both times (it says 1), the CNN-DNN gets it right, so the per-class table
must show class 2 as the one the coarse net fixes.
"""

from __future__ import annotations

import numpy as np
import pytest

from ddmlflow.pipeline.classifier_eval import Method, confusion, evaluate_classifiers, per_class, per_class_table
from ddmlflow.tables import md_table, results_table

Y = np.array([0, 0, 1, 1, 2, 2])
CNN_DNN = np.array([0, 0, 1, 0, 2, 2])  # one class-1 image wrong
AVG = np.array([0, 0, 1, 1, 1, 1])  # class 2 always called 1
NAMES = ["circle", "square", "triangle"]


def test_confusion_counts_true_rows_predicted_columns():
    assert confusion(Y, AVG, 3).tolist() == [[2, 0, 0], [0, 2, 0], [0, 2, 0]]
    assert confusion(Y, CNN_DNN, 3).tolist() == [[2, 0, 0], [1, 1, 0], [0, 0, 2]]


def test_per_class_precision_recall_f1():
    avg = per_class(confusion(Y, AVG, 3))
    np.testing.assert_allclose(avg["recall"], [1, 1, 0])
    np.testing.assert_allclose(avg["precision"], [1, 0.5, 0])  # nothing predicted as 2: 0, not NaN
    np.testing.assert_allclose(avg["f1"], [1, 2 / 3, 0])
    cnn = per_class(confusion(Y, CNN_DNN, 3))
    np.testing.assert_allclose(cnn["recall"], [1, 0.5, 1])
    np.testing.assert_allclose(cnn["precision"], [2 / 3, 1, 1])
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, _ = precision_recall_fscore_support(Y, CNN_DNN, labels=[0, 1, 2], zero_division=0)
    np.testing.assert_allclose(np.c_[cnn["precision"], cnn["recall"], cnn["f1"]], np.c_[p, r, f])


def test_the_results_table_and_the_report_name_compose_alike():
    """One label map: the `compose` strategy's column is Gu et al.'s GNet-T-trained everywhere."""
    from ddmlflow.commands import report

    text = results_table({"val_accuracy/compose": 0.7, "train_accuracy/compose": 0.8}, "2x2", ("coherent", "compose"))
    head, rows = md_table(text)
    assert head[-2:] == ["CNN-DNN-coherent", "GNet-T-trained"] and rows[0][-1] == "0.7000 (0.8000)"
    assert report.LABELS["compose"] == "GNet-T-trained" and not hasattr(report, "NAMES")


def test_per_class_table_shows_the_class_the_coarse_net_fixes():
    text = per_class_table(Y, {"cnn_dnn": CNN_DNN, "avg_prob": AVG, "majority_vote": AVG}, NAMES)
    head, rows = md_table(text)
    assert head == ["class", "n", "CNN-DNN", "avg. prob.", "maj. vote", "CNN-DNN - avg. prob."]
    assert rows == [
        ["circle", "2", "1.000", "1.000", "1.000", "+0.000"],
        ["square", "2", "0.500", "1.000", "1.000", "-0.500"],
        ["triangle", "2", "1.000", "0.000", "0.000", "+1.000"],
    ]


def test_sigmoid_column_becomes_two_classes():
    m = Method.from_probs("global", np.array([[0.2], [0.9]]))
    assert m.labels.tolist() == [0, 1] and m.probs.shape == (2, 2)


@pytest.mark.filterwarnings("error::sklearn.exceptions.UndefinedMetricWarning")  # off the console
def test_each_method_gets_its_own_metrics_and_artifacts_linked_to_its_model(mlflow_env, tmp_path):
    import mlflow

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 10)
    probs = rng.dirichlet(np.ones(3), size=len(y)) + 2 * np.eye(3)[y] * (rng.random((len(y), 1)) < 0.8)
    probs /= probs.sum(1, keepdims=True)
    from mlflow.entities import LoggedModelOutput

    with mlflow.start_run() as run:  # as evaluate is after logging the CNN-DNN: the run's output model and,
        model = mlflow.initialize_logged_model(name="cnn_dnn")  # MLflow having loaded it, the active model
        mlflow.MlflowClient().log_outputs(run.info.run_id, [LoggedModelOutput(model.model_id, 0)])
    with mlflow.start_run(run_id=run.info.run_id):
        mlflow.set_active_model(model_id=model.model_id)
        scores = evaluate_classifiers(
            y,
            [
                Method.from_probs("cnn_dnn", probs, model.model_id),
                Method("majority_vote", np.roll(y, 1)),
                Method("never_triangle", np.minimum(y, 1)),
            ],  # nothing predicted as 2
            NAMES,
            "toy-val",
            tmp_path,
        )
    c = mlflow.MlflowClient()
    r = c.get_run(run.info.run_id)
    m = r.data.metrics
    for method, s in scores.items():
        for what in ("precision", "recall", "f1"):
            for i, name in enumerate(NAMES):
                assert m[f"val_{method}_{what}/{name}"] == pytest.approx(s[what][i])
    assert m["val_cnn_dnn_accuracy_score"] == pytest.approx(np.mean(probs.argmax(1) == y))
    assert m["val_majority_vote_accuracy_score"] == pytest.approx(0.9)  # the roll moves 3 of 30 labels
    assert 0.5 < m["val_cnn_dnn_roc_auc"] <= 1 and "val_majority_vote_roc_auc" not in m  # labels only: no curves
    arts = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {
        "val_cnn_dnn_confusion_matrix.png",
        "val_majority_vote_confusion_matrix.png",
        "val_cnn_dnn_per_class_metrics.csv",
        "val_majority_vote_per_class_metrics.csv",
        "val_cnn_dnn_roc_curve_plot.png",
        "val_cnn_dnn_precision_recall_curve_plot.png",
        "confusion_matrices.png",
        "per_class.md",
    } <= arts
    assert "per_class_metrics.csv" not in arts  # MLflow's unprefixed name: one method would overwrite another
    linked = {x.key for x in mlflow.get_logged_model(model.model_id).metrics}
    assert {"val_cnn_dnn_accuracy_score", "val_cnn_dnn_recall/triangle", "val_cnn_dnn_roc_auc"} <= linked
    assert not any(k.startswith(("val_majority_vote", "val_never_triangle")) for k in linked)
    [inp] = [i for i in r.inputs.dataset_inputs if i.dataset.name == "toy-val"]
    assert [(t.key, t.value) for t in inp.tags] == [("mlflow.data.context", "validation")]
