"""Does the coarse net gain little because it learns from the locals' outputs on their own training images?

    python benchmarks/coarse_heldout.py --tracking-uri sqlite:///mlflow.db --parent RUN_ID --json

Reads a finished `full` run's locals and coarse net from the store and trains the same coarse net
(its logged hidden layers, dropout, epochs, batch size, learning rate and epoch selection, through the
engine's ``fit``) on two kinds of input:

* ``train``: the locals' probabilities on the training set, as KLW and `full` do; validation accuracy
  over ``--seeds`` seeds;
* ``heldout``: probabilities the locals never trained on, 5-fold over the validation set: fit on four
  folds, report on the fifth (averaging the locals' probabilities on the same folds for comparison).

If held-out inputs gave a clearly better coarse net, the locals' confidence on their own training images
would be what holds the CNN-DNN back. The figures are in the main README ("Results at the `cpu` budget").
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from executors import show  # the executors benchmark, beside this file


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    ap.add_argument("--parent", required=True, help="run id of the `full` parent run")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import mlflow

    from ddmlflow.models import build_coarse
    from ddmlflow.pipeline.coarse import coarse_inputs, selection_split
    from ddmlflow.training import FitConfig, fit, seed_everything

    mlflow.set_tracking_uri(a.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    c = mlflow.MlflowClient()
    parent = c.get_run(a.parent)
    kids = {
        r.info.run_name: r
        for r in c.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{a.parent}'")
    }
    coarse_run = kids["train_coarse"]
    local_runs = coarse_run.data.params["local_runs"].split(",")
    f, y, fv, yv, k = coarse_inputs(local_runs, kids["decompose"].info.run_id)
    n, p = len(local_runs), coarse_run.data.params
    hidden = tuple(int(h) for h in p["coarse_hidden"].split(","))

    def fitted(x, labels, seed: int):
        """The coarse net as `train_coarse` fits it: with patience, its epoch chosen on a seeded fifth of ``x``."""
        seed_everything(seed)
        net = build_coarse(n, k, hidden=hidden, dropout=float(p["coarse_dropout"]))
        fc = FitConfig(
            int(p["coarse_epochs"]),
            int(p["coarse_batch_size"]),
            float(p["coarse_learning_rate"]),
            p["optimizer"],
            int(p["coarse_patience"]),
            seed,
        )
        if fc.patience > 0:
            fit_i, sel_i = selection_split(len(labels), seed)
            fit(net, (x[fit_i], labels[fit_i], x[sel_i], labels[sel_i]), k, fc, log_to_mlflow=False)
        else:  # fixed epochs: the held-out part only watches
            fit(net, (x, labels, x, labels), k, fc, log_to_mlflow=False)
        return net

    def accuracy(net, x, labels) -> float:
        return float(np.mean(net.predict(x, verbose=0).argmax(1) == labels))

    def averaged(x, labels) -> float:
        return float(np.mean(x.reshape(len(x), n, k).mean(1).argmax(1) == labels))

    top = [float(x.reshape(len(x), n, k).max(2).mean()) for x in (f, fv)]
    out: dict = {
        "parent": a.parent,
        "locals_train_accuracy": [float(np.mean(f[:, i * k : (i + 1) * k].argmax(1) == y)) for i in range(n)],
        "locals_val_accuracy": [float(np.mean(fv[:, i * k : (i + 1) * k].argmax(1) == yv)) for i in range(n)],
        "locals_mean_top_probability_train": top[0],
        "locals_mean_top_probability_val": top[1],
        "run_cnn_dnn_val_accuracy": coarse_run.data.metrics.get("final_val_accuracy"),
        "avg_prob_val_accuracy": averaged(fv, yv),
    }
    train = [accuracy(fitted(f, y, s), fv, yv) for s in range(a.seeds)]
    folds = np.array_split(np.random.default_rng(0).permutation(len(yv)), a.folds)
    heldout, avg = [], []
    for i, test in enumerate(folds):
        rest = np.concatenate([fo for j, fo in enumerate(folds) if j != i])
        heldout.append(accuracy(fitted(fv[rest], yv[rest], i), fv[test], yv[test]))
        avg.append(averaged(fv[test], yv[test]))
    out.update(
        train_per_seed=train,
        train_mean=float(np.mean(train)),
        heldout_per_fold=heldout,
        heldout_mean=float(np.mean(heldout)),
        avg_prob_per_fold=avg,
        avg_prob_fold_mean=float(np.mean(avg)),
    )
    show(out, a.json)


if __name__ == "__main__":
    main()
