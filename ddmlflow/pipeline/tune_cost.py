"""The cost argument of KLW sec. 4, measured: what a search spent, per target, and the ratio.

FLOPs spent by a search = sum over trials and executions of forward FLOPs per
sample (``profiling.flops``, exact convention) x training samples x epochs run
(the issue's "FLOPs per sample x samples x epochs x trials"; the backward pass
scales every net alike, so ratios are unaffected). Time = summed ``fit`` time.

KLW's estimate: a global search costs O(K * M_CNN) (K parameters of the global
CNN, M_CNN points searched), tuning the locals in parallel and then the DNN
O(K/p^2 * M_CNN) + O(k * M_DNN) (k parameters of the DNN, p^2 = N locals), so

    ratio_KLW = K * M_CNN / (K/p^2 * M_CNN + k * M_DNN) = p^2 * M_CNN / (M_CNN + p^2 * (k/K) * M_DNN).

It counts one local (they run in parallel), so it compares with our
``parallel`` ratio (slowest local + coarse); ``total`` counts every local.
"""

from __future__ import annotations

import mlflow

from .. import models
from ..profiling import flops_exact
from ..results import Decomposed
from ..tracking import get_run, retry, say


def _sum(ms: list[dict], key: str) -> float:
    return float(sum(m.get(key, 0.0) for m in ms))


def log_costs(runs: dict[str, str], cfg, target: str, decomposed: Decomposed | None = None) -> dict:
    """Per-target FLOPs and time into the active (tune parent) run; for ``all`` the ratios. Printed too."""
    metrics = {name: retry(get_run, run_id).data.metrics for name, run_id in runs.items()}
    groups = {
        "global": [m for n, m in metrics.items() if n == "global"],
        "locals": [m for n, m in metrics.items() if n.startswith("local/")],
        "coarse": [m for n, m in metrics.items() if n == "coarse"],
    }
    out = {}
    for g, ms in groups.items():
        if ms:
            out[f"tune_flops/{g}"] = _sum(ms, "tune_flops")
            out[f"tune_time_s/{g}"] = _sum(ms, "tune_time_s")
            out[f"tune_trials/{g}"] = _sum(ms, "trials_completed") + _sum(ms, "trials_failed")
    if groups["locals"]:
        out["tune_flops/locals_max"] = max(m.get("tune_flops", 0.0) for m in groups["locals"])
        out["tune_time_s/locals_max"] = max(m.get("tune_time_s", 0.0) for m in groups["locals"])
    if target == "all" and decomposed is not None:
        out.update(_all_ratios(groups, cfg, decomposed))
    retry(mlflow.log_metrics, out)
    for k, v in out.items():
        say(f"cost {k} = {v:.4g}")
    return out


def _all_ratios(groups: dict, cfg, decomposed: Decomposed) -> dict:
    """A global search of the same space and trial count, priced from the global net's profile."""
    locs, coarse = groups["locals"], groups["coarse"][0]
    net = models.build(cfg.model, decomposed.image_shape, decomposed.num_classes, name="global")
    big_k, small_k, n = net.count_params(), coarse.get("params_count", 0.0), len(locs)
    epochs = _sum(locs, "tune_epochs") / n  # the same trial schedule as one local search
    m_cnn, m_dnn = _sum(locs, "trials_completed") / n, coarse.get("trials_completed", 0.0)
    g_flops = flops_exact(net) * locs[0].get("samples", 0.0) * epochs
    f_all = _sum(locs, "tune_flops") + coarse.get("tune_flops", 0.0)
    f_par = max(m.get("tune_flops", 0.0) for m in locs) + coarse.get("tune_flops", 0.0)
    return {
        "tune_flops/global_equivalent": g_flops,
        "tune_flops/all": f_all,
        "tune_time_s/all": _sum(locs, "tune_time_s") + coarse.get("tune_time_s", 0.0),
        "tune_time_s/all_parallel": max(m.get("tune_time_s", 0.0) for m in locs) + coarse.get("tune_time_s", 0.0),
        "cost_ratio/flops_total": g_flops / f_all,
        "cost_ratio/flops_parallel": g_flops / f_par,
        "cost_ratio/klw_estimate": big_k * m_cnn / (big_k / n * m_cnn + small_k * m_dnn),
        "klw/K_global_params": big_k,
        "klw/k_coarse_params": small_k,
        "klw/p2": n,
        "klw/M_CNN": m_cnn,
        "klw/M_DNN": m_dnn,
    }
