"""Step 3 (KLW sec. 3.2): the dense coarse net on the concatenated local probabilities."""
from __future__ import annotations

import mlflow
import numpy as np

from ..config import RunConfig
from ..models import build_coarse
from ..models.cnn_dnn import coarse_features
from ..tracking import get_run, log_params, logged_steps, work_dir
from ..training import FitConfig, fit, seed_everything
from .finish import finish_training
from .train import load_probs


def train_coarse(cfg: RunConfig, local_runs: list[str]) -> None:
    """In the active run: fit on the locals' train probabilities, validate on their val ones."""
    run_id = mlflow.active_run().info.run_id
    seed_everything(cfg.seed)
    runs = [get_run(r, "local_runs") for r in local_runs]
    probs = [load_probs(r.info.run_id) for r in runs]
    y, yv = _labels(runs[0].data.params["decompose_run"])
    k = probs[0][0].shape[1]
    f, fv = coarse_features([p[0] for p in probs]), coarse_features([p[1] for p in probs])
    net = build_coarse(len(local_runs), k, hidden=cfg.coarse_hidden, dropout=cfg.coarse_dropout)
    log_params({**cfg.params(), "local_runs": ",".join(local_runs)})
    fc = FitConfig(epochs=cfg.coarse_epochs, batch_size=cfg.coarse_batch_size, learning_rate=cfg.coarse_learning_rate,
                   optimizer=cfg.optimizer, patience=cfg.patience, seed=cfg.seed)
    summary = fit(net, (f, y, fv, yv), k, fc, checkpoint_dir=work_dir("checkpoints", run_id),
                  skip_epochs=logged_steps(run_id, "loss"))
    finish_training(net, (f, y, fv, yv), summary, batch_size=cfg.coarse_batch_size)


def _labels(decompose_run: str) -> tuple[np.ndarray, np.ndarray]:
    from .prepared import load_prepared

    prep = load_prepared(decompose_run)
    return np.asarray(prep.y_train), np.asarray(prep.y_val)
