"""Further training strategies, each one step run next to the CNN-DNN of KLW.

* ``coherent`` (KLW-TL sec. 2.1, CNN-DNN-coherent): the CNN-DNN built as one
  Keras model (crops -> local nets -> coarse net), randomly initialised and
  trained end to end on whole images.
* ``transfer`` (KLW-TL sec. 2.2, CNN-DNN-transfer): the same model
  initialised with the trained local nets, then trained further. KLW-TL
  transfer "the obtained network parameters" of the local CNNs, pre-trained
  for 150 epochs (preset field ``transfer_pretrain_epochs``), so
  ``transfer_coarse=False`` starts the coarse part from random weights; with
  ``transfer_coarse=True`` the trained coarse net is transferred too, and
  before further training the model *is* the two-step CNN-DNN
  (``val_accuracy_init`` equals the CNN-DNN's validation accuracy).
* ``compose`` (Gu et al. 2022, Algorithm 1): N sub-networks of width 1/N
  trained on the boxes, composed into the global net (GNet-T), trained
  further (GNet-T-trained); plus the randomly initialised global net trained
  for the same total number of epochs (GNet-R), as in their Table 3.3. Each
  phase follows GC's step learning-rate schedule (``lr_schedules``) unless the
  preset's ``compose_lr_schedule`` is "constant".

Every strategy logs into the active run what ``evaluate`` and the runs table
read: parameters, per-epoch metrics, ``train_time_s``, ``epochs_run``,
``params_count``, ``flops`` / ``paper_mflops`` / ``flops_exact``, final accuracies,
``probs.npz`` (train/val) and the model.
"""

from __future__ import annotations

from dataclasses import replace

import mlflow
import numpy as np

from .. import lr_schedules, models
from ..config import RunConfig
from ..describe import Role
from ..errors import InputError
from ..inference import accuracy, predict_probs
from ..models.cnn_dnn import build_coherent, build_coherent_from_scratch
from ..models.compose import check, compose, theorem_error
from ..tags import STRATEGY_TAG
from ..tracking import log_params, retry, say, work_dir
from ..training import FitConfig, fit, seed_everything
from .finish import finish_training
from .prepared import Prepared, load_prepared
from .train import load_keras, load_probs

THEOREM_IMAGES = 8  # validation images on which GC's Theorem 2.1 is checked
FURTHER_LR_FACTOR = 0.1  # GC sec. 3.1.1: the composed net continues at 1/10 of the learning rate


def train_coherent(cfg: RunConfig, decompose_run: str) -> None:
    """KLW-TL CNN-DNN-coherent: the whole CNN-DNN trained as one model from random weights."""
    prep = _start(cfg, "coherent", {"decompose_run": decompose_run})
    net = build_coherent_from_scratch(
        cfg.model, prep.decomposition, prep.num_classes, cfg.width_divisor, cfg.coarse_hidden, cfg.coarse_dropout
    )
    _train_and_log(net, prep, FitConfig.of(cfg, prep.augment), "coherent")


def transfer(
    cfg: RunConfig,
    decompose_run: str,
    local_runs: list[str],
    coarse_run: str | None = None,
    transfer_coarse: bool | None = None,
) -> None:
    """KLW-TL CNN-DNN-transfer: the coherent model initialised with the trained nets, trained further.

    ``transfer_coarse=False`` (KLW-TL's wording) transfers the local nets only; the
    coarse net starts from random weights. ``transfer_coarse=True`` also transfers
    the trained coarse net of ``coarse_run``. The local runs' actual training length
    is logged as ``pretrain_epochs`` (KLW-TL: 150). Default: the config's ``transfer_coarse``.
    """
    transfer_coarse = cfg.transfer_coarse if transfer_coarse is None else transfer_coarse
    if transfer_coarse and not coarse_run:
        raise InputError("coarse_run", coarse_run, "a trained coarse run to transfer, or transfer_coarse=False")
    prep = _start(
        cfg,
        "transfer",
        {
            "decompose_run": decompose_run,
            "local_runs": ",".join(local_runs),
            "coarse_run": coarse_run or "",
            "transfer_coarse": bool(transfer_coarse),
        },
    )
    if len(local_runs) != prep.decomposition.n:
        raise InputError("local_runs", len(local_runs), f"one run per box ({prep.decomposition.n})")
    epochs = [mlflow.get_run(r).data.metrics.get("epochs_run") for r in local_runs]
    log_params({"pretrain_epochs": int(max(e for e in epochs if e is not None)) if any(epochs) else ""})
    local = [load_keras(r) for r in local_runs]
    coarse = (
        load_keras(coarse_run)
        if transfer_coarse
        else models.build_coarse(prep.decomposition.n, prep.num_classes, cfg.coarse_hidden, cfg.coarse_dropout)
    )
    net = build_coherent(local, coarse, prep.decomposition)
    init = {"val_accuracy_init": accuracy(predict_probs(net, np.asarray(prep.x_val)), prep.y_val)}
    if transfer_coarse:
        init["val_accuracy_two_step"] = accuracy(load_probs(coarse_run)[1], prep.y_val)
    retry(mlflow.log_metrics, init)
    say(f"transfer: validation accuracy before further training {init['val_accuracy_init']:.4f}")
    _train_and_log(net, prep, FitConfig.of(cfg, prep.augment), "transfer")


def compose_step(cfg: RunConfig, decompose_run: str) -> None:
    """Gu et al. (GC) Algorithm 1 with GNet-T, GNet-T-trained and GNet-R (their Table 3.3).

    GC decompose into nonoverlapping boxes (and overlapping ones in their
    experiments); we use the decomposition as given and log whether it
    overlaps: the composition is exact in GC's setting only (see
    ``models.compose``). Sub-network widths are divided by N (GC), not by
    ``width_divisor``. The sub-networks are trained here, one after another;
    ``train_time_parallel_s`` is the time with them in parallel.
    """
    prep = _start(cfg, "compose", {"decompose_run": decompose_run})
    d, k = prep.decomposition, prep.num_classes
    n_pixels = int(np.prod(d.image_shape[:-1]))
    schedule = cfg.compose_lr_schedule
    log_params(
        {
            "sub_width_divisor": d.n,
            "nonoverlapping": sum(int(np.prod(b.shape)) for b in d.boxes) == n_pixels,
            "further_learning_rate": cfg.learning_rate * FURTHER_LR_FACTOR,
            "gnet_r_epochs": 2 * cfg.epochs,
            "compose_lr_schedule": schedule,
        }
    )
    steps = int(np.ceil(len(prep.y_train) / cfg.batch_size))

    def scheduled(fc: FitConfig, phase: tuple) -> FitConfig:  # GC's steps; the optimizer takes a schedule as rate
        if schedule == "constant":
            return fc
        return replace(fc, learning_rate=lr_schedules.step_schedule(fc.learning_rate, fc.epochs, steps, phase))

    def sub_net(i: int):
        return models.build(cfg.model, d.input_shape(i), k, width_divisor=d.n, name=f"sub_{i:02d}", klw_local=False)

    check([sub_net(i) for i in range(d.n)], d, models.build(cfg.model, d.image_shape, k))  # fail before training
    subs, sub_times = [], []
    for i in range(d.n):  # step 3 of Algorithm 1 (in parallel in GC; sequential here)
        seed_everything(cfg.seed + 1 + i)
        sub = sub_net(i)
        x, y, xv, yv = prep.box(i)
        summary = fit(
            sub,
            (x, y, xv, yv),
            k,
            scheduled(FitConfig.of(cfg, prep.augment, seed=cfg.seed + 1 + i), lr_schedules.GC_SUB),
            log_to_mlflow=False,
        )
        retry(
            mlflow.log_metrics,
            {
                "subnet_val_accuracy": accuracy(predict_probs(sub, xv), yv),
                "subnet_train_time_s": summary["train_time_s"],
            },
            step=i,
        )
        subs.append(sub)
        sub_times.append(summary["train_time_s"])
    seed_everything(cfg.seed)
    net = compose(subs, d, models.build(cfg.model, d.image_shape, k, name="gnet_t"))  # step 4
    xv = np.asarray(prep.x_val)
    retry(
        mlflow.log_metrics,
        {
            "val_accuracy_composed": accuracy(predict_probs(net, xv), prep.y_val),
            "theorem_max_abs_err": theorem_error(subs, net, d, xv[:THEOREM_IMAGES]),
            "subnets_train_time_s": float(np.sum(sub_times)),
        },
    )
    further = scheduled(
        replace(FitConfig.of(cfg, prep.augment), learning_rate=cfg.learning_rate * FURTHER_LR_FACTOR),
        lr_schedules.GC_FURTHER,
    )
    # step 5: GNet-T-trained
    summary = _train_and_log(net, prep, further, "compose", earlier_time_s=float(np.sum(sub_times)))
    retry(mlflow.log_metric, "train_time_parallel_s", float(np.max(sub_times)) + summary["train_time_s"])
    _gnet_r(cfg, prep, lambda fc: scheduled(fc, lr_schedules.GC_GLOBAL))


def _gnet_r(cfg: RunConfig, prep: Prepared, scheduled) -> None:
    """GNet-R: the global net from random weights, trained for sub-net + further epochs (GC: 120 + 80)."""
    seed_everything(cfg.seed)
    net = models.build(cfg.model, prep.decomposition.image_shape, prep.num_classes, name="gnet_r")
    fc = FitConfig.of(cfg, prep.augment)
    x, y, xv, yv = prep.box(None)
    summary = fit(
        net, (x, y, xv, yv), prep.num_classes, scheduled(replace(fc, epochs=2 * cfg.epochs)), log_to_mlflow=False
    )
    retry(
        mlflow.log_metrics,
        {
            "val_accuracy_gnet_r": accuracy(predict_probs(net, xv), yv),
            "gnet_r_train_time_s": summary["train_time_s"],
            "gnet_r_epochs_run": summary["epochs_run"],
        },
    )


def _start(cfg: RunConfig, strategy: str, inputs: dict) -> Prepared:
    seed_everything(cfg.seed)
    log_params({**cfg.params(), "strategy": strategy, **inputs})
    mlflow.set_tag(STRATEGY_TAG, strategy)
    return load_prepared(inputs["decompose_run"])


def _train_and_log(net, prep: Prepared, fc: FitConfig, strategy: str, earlier_time_s: float = 0.0) -> dict:
    """Fit on whole images (per-epoch metrics, resumable), then log the run's standard outputs.

    ``train_time_s`` includes ``earlier_time_s``, the training before this fit (GC's sub-networks).
    """
    run_id = mlflow.active_run().info.run_id
    x, y, xv, yv = prep.box(None)
    summary = fit(
        net,
        (x, y, xv, yv),
        prep.num_classes,
        fc,
        checkpoint_dir=work_dir("checkpoints", run_id),
    )
    finish_training(
        net,
        (x, y, xv, yv),
        {**summary, "train_time_s": earlier_time_s + summary["train_time_s"]},
        Role("strategy", strategy=strategy),
        batch_size=fc.batch_size,
    )
    return summary
