"""Step 3 (KLW sec. 3.2): the dense coarse net on the concatenated local probabilities.

The coarse net has its own stopping rule, ``coarse_patience`` (the locals'
``patience`` is about CNNs on images, not about this small dense net, which
overfits the locals' confident training probabilities within a few epochs).
Its epoch is chosen on a seeded held-out part of the training set, so the
reported validation accuracy is not also the selection criterion. KLW choose on
their validation set, the only held-out data they have.
"""

from __future__ import annotations

import mlflow
import numpy as np

from ..config import RunConfig
from ..describe import Role
from ..models import build_coarse
from ..models.cnn_dnn import coarse_features
from ..tracking import get_run, log_params, work_dir
from ..training import FitConfig, fit, seed_everything
from .finish import finish_training
from .prepared import load_prepared
from .train import load_probs

SELECTION_FRACTION = 0.2  # of the training samples, held out to choose the coarse net's epoch


def selection_split(n: int, seed: int, fraction: float = SELECTION_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """(fit, select) sample indices of the training set, seeded, both sorted and non-empty."""
    n_sel = min(max(int(round(fraction * n)), 1), n - 1)
    perm = np.random.default_rng([seed, 17]).permutation(n)
    return np.sort(perm[n_sel:]), np.sort(perm[:n_sel])


def train_coarse(cfg: RunConfig, local_runs: list[str], decompose_run: str | None = None) -> None:
    """In the active run: fit on the locals' train probabilities, report on their val ones; the labels
    come from ``decompose_run`` (given by ``full``; alone, the one the first local run names).

    With ``coarse_patience`` > 0 the epoch metrics ``val_*`` of this run are those of
    the held-out selection split, not of the validation set (``final_val_accuracy`` is).
    """
    run_id = mlflow.active_run().info.run_id
    seed_everything(cfg.seed)
    f, y, fv, yv, k = coarse_inputs(local_runs, decompose_run)
    net = build_coarse(len(local_runs), k, hidden=cfg.coarse_hidden, dropout=cfg.coarse_dropout)
    if cfg.coarse_patience > 0 and len(y) >= 2:
        fit_i, sel_i = selection_split(len(y), cfg.seed)
        data = (f[fit_i], y[fit_i], f[sel_i], y[sel_i])
        selection = (
            f"early stopping (patience {cfg.coarse_patience}) on {len(sel_i)} held-out training "
            f"samples ({SELECTION_FRACTION:.0%}, seed {cfg.seed}); fit on the other {len(fit_i)}"
        )
    else:
        data = (f, y, fv, yv)
        selection = "none: fixed coarse_epochs (the validation set is only logged)"
    log_params({**cfg.params(), "local_runs": ",".join(local_runs), "coarse_selection": selection})
    fc = FitConfig.coarse(cfg)
    summary = fit(net, data, k, fc, checkpoint_dir=work_dir("checkpoints", run_id))
    finish_training(
        net, (f, y, fv, yv), summary, Role("coarse", n_locals=len(local_runs)), batch_size=cfg.coarse_batch_size
    )


def coarse_inputs(local_runs: list[str], decompose_run: str | None = None) -> tuple:
    """(features, labels, val features, val labels, K): the locals' concatenated probabilities (KLW sec. 3.2);
    the labels from ``decompose_run`` (None: the one the first local run names)."""
    runs = [get_run(r, "local_runs") for r in local_runs]
    probs = [load_probs(r.info.run_id) for r in runs]
    y, yv = _labels(decompose_run or runs[0].data.params["decompose_run"])
    return (coarse_features([p[0] for p in probs]), y, coarse_features([p[1] for p in probs]), yv, probs[0][0].shape[1])


def _labels(decompose_run: str) -> tuple[np.ndarray, np.ndarray]:
    prep = load_prepared(decompose_run)
    return np.asarray(prep.y_train), np.asarray(prep.y_val)
