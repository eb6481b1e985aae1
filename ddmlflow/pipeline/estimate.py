"""How long a ``full`` configuration takes on this machine, before anything of it trains.

``ddmlflow reproduce --estimate`` calls ``estimate`` for each row of a table. Each row's networks are
timed here, on the row's own data (its first images), shapes, batch size and precision, each route in a
fresh process with the threads the packed executor gives it (``measure``): the global net through
``training.fit`` with TensorFlow's threads (rows that train one), the locals packed (``packed_training``)
with one thread per op and, in the same process, the coarse net on features of its real width; the
CNN-DNN as one model (``coherent``, ``transfer``) through ``training.fit`` with TensorFlow's threads, as
the driver trains it (rows with those strategies). A short first epoch traces; the second is timed.
Seconds per training image per epoch (validation at the row's ratio included), times the row's images
and epochs, plus predicting every image once per net (the probabilities the coarse net and the report
read) and a fixed ``OVERHEAD_S`` per row (start, decomposition, evaluation, logging), is the estimate.
The coarse net is counted at its epoch cap (its early stopping usually ends it sooner); the strategies
by the nets they train (``STRATEGY_NETS``), each predicting every image once. The one-model CNN-DNN is
timed apart from the packed locals: it is not packed (its branches one after another in one graph, with
TensorFlow's threads), so an epoch of it costs more than one of the packed group.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..config import RunConfig, from_json, to_json

OVERHEAD_S = 20.0  # per row: process start, decomposition, evaluation, figures, logging (README "Speed")
CALIBRATION_BATCHES = 16  # timed batches per route: long enough to average, short enough for a dry run
# The net each strategy trains beyond the CNN-DNN, and how many times ``epochs`` over it.
STRATEGY_NETS = {"coherent": ("coherent", 1), "transfer": ("coherent", 1), "compose": ("global", 2)}


@dataclass(frozen=True)
class Costs:
    """Seconds per image measured here, for one configuration's networks."""

    n_train: int
    n_val: int
    locals_train: float  # per training image per epoch (its validation share included): the packed group
    locals_predict: float  # every local, one after another
    coarse_train: float
    global_train: float = 0.0  # measured only for rows that train it (a global net, or compose)
    global_predict: float = 0.0
    coherent_train: float = 0.0  # the CNN-DNN as one model: measured only for coherent and transfer
    coherent_predict: float = 0.0


def _prep(cfg: RunConfig, n: int) -> Any:
    """The row's data (as ``decompose`` loads it), cut to ``n`` training images and the row's val ratio."""
    from .. import data
    from ..decomposition import make
    from .prepared import Prepared

    ds = data.load(**cfg.data_args(), progress=False)
    prep = Prepared.of(ds, make(cfg.decomposition, ds.x_train.shape[1:], cfg.overlap), n)
    return prep, len(ds.x_train), len(ds.x_val)


def _predict_s(net: Any, x: np.ndarray) -> float:
    from ..inference import predict

    predict(net, x[:8])
    t0 = time.perf_counter()
    predict(net, x)
    return (time.perf_counter() - t0) / len(x)


def measure(cfg: RunConfig, route: str) -> dict[str, float]:
    """Seconds per image of ``route`` ("global": the global net; "locals": the packed group and the coarse
    net; "coherent": the CNN-DNN as one model), in this process; call in a fresh one (threads are fixed
    when TensorFlow starts)."""
    from .. import models
    from ..models.cnn_dnn import build_coherent_from_scratch
    from ..packed_training import configure_threads, train_packed
    from ..training import EpochTimes, FitConfig, fit

    if route == "locals":
        configure_threads()
    prep, n_train, n_val = _prep(cfg, CALIBRATION_BATCHES * cfg.batch_size)
    n = len(prep.x_train)  # fewer when the row has fewer
    cfg = replace(cfg, epochs=2, patience=0)
    k, out = prep.num_classes, {"n_train": float(n_train), "n_val": float(n_val)}

    def fitted(net, data, fc) -> float:  # seconds of the second epoch (the first traces)
        t = EpochTimes()
        fit(net, data, k, fc, log_to_mlflow=False, callbacks=[t])
        return t.stamps[2] - t.stamps[1]

    if route == "global":
        net = models.build(cfg.model, prep.decomposition.image_shape, k, name="global", dropout=cfg.dropout)
        x = prep.augmented_train(None, FitConfig.of(cfg)) if prep.augment else prep.x_train
        out["global_train"] = fitted(net, (x, prep.y_train, prep.x_val, prep.y_val), FitConfig.of(cfg)) / n
        out["global_predict"] = _predict_s(net, prep.x_train)
    elif route == "coherent":  # as ``strategies`` trains it: whole images, the row's augmentation
        d = prep.decomposition
        net = build_coherent_from_scratch(cfg.model, d, k, cfg.width_divisor, cfg.coarse_hidden, cfg.coarse_dropout)
        out["coherent_train"] = fitted(net, prep.box(None), FitConfig.of(cfg, prep.augment)) / n
        out["coherent_predict"] = _predict_s(net, prep.x_train)
    else:
        boxes, t = list(range(prep.decomposition.n)), EpochTimes()
        t.stamp()
        group = train_packed(cfg, prep, boxes, [""] * len(boxes), None, t.stamp)
        out["locals_train"] = (t.stamps[2] - t.stamps[1]) / n
        out["locals_predict"] = sum(_predict_s(r.model, prep.decomposition.crop(prep.x_train, r.box)) for r in group)
        width = prep.decomposition.n * models.output_units(k)
        coarse = models.build_coarse(prep.decomposition.n, k, cfg.coarse_hidden, cfg.coarse_dropout)
        nc = CALIBRATION_BATCHES * cfg.coarse_batch_size
        feats = np.random.default_rng(0).random((nc, width), dtype=np.float32)
        labels = np.arange(nc) % k
        fc = replace(FitConfig.coarse(cfg), epochs=2, patience=0)
        out["coarse_train"] = fitted(coarse, (feats, labels, feats[: nc // 4], labels[: nc // 4]), fc) / nc
    return out


def routes(run_global: bool, strategies: tuple[str, ...]) -> tuple[str, ...]:
    """The nets a row trains: the locals always, the global net if the row or one of its strategies does."""
    nets = (
        {"locals"}
        | ({"global"} if run_global else set())
        | {STRATEGY_NETS[s][0] for s in strategies if s in STRATEGY_NETS}
    )
    return tuple(r for r in ("global", "locals", "coherent") if r in nets)


def costs(cfg: RunConfig, run_global: bool = True, strategies: tuple[str, ...] = ()) -> Costs:
    """``measure`` of the routes a row trains, each in a fresh process."""
    got: dict[str, float] = {}
    for route in routes(run_global, strategies):
        res = subprocess.run(
            [sys.executable, "-m", __name__, route, to_json(cfg)], capture_output=True, text=True, check=False
        )
        if res.returncode != 0:
            raise RuntimeError(f"measuring the {route} nets failed: {res.stderr.strip().splitlines()[-1:]}")
        got.update(json.loads(res.stdout.strip().splitlines()[-1]))
    return Costs(int(got.pop("n_train")), int(got.pop("n_val")), **got)


def estimate(cfg: RunConfig, c: Costs, run_global: bool, strategies: tuple[str, ...]) -> dict[str, float]:
    """Seconds per part of one ``full`` run of ``cfg`` from scratch, with ``c`` measured for it."""
    n_train = min(cfg.n_train or c.n_train, c.n_train)
    n_all = n_train + min(cfg.n_val or c.n_val, c.n_val)
    parts = {
        "global": (cfg.epochs * n_train * c.global_train + n_all * c.global_predict) if run_global else 0.0,
        "locals": cfg.epochs * n_train * c.locals_train + n_all * c.locals_predict,
        "coarse": cfg.coarse_epochs * n_train * c.coarse_train,
        "overhead": OVERHEAD_S,
    }
    per_epoch = {"global": c.global_train, "coherent": c.coherent_train}
    predict = {"global": c.global_predict, "coherent": c.coherent_predict}
    runs = [STRATEGY_NETS[s] for s in strategies if s in STRATEGY_NETS]
    pretrain = (
        cfg.transfer_pretrain_epochs * c.locals_train if "transfer" in strategies and cfg.pretrains_apart else 0.0
    )
    parts["strategies"] = n_train * pretrain + sum(
        n_train * k * cfg.epochs * per_epoch[net] + n_all * predict[net] for net, k in runs
    )
    parts["total"] = sum(parts.values())
    return parts


if __name__ == "__main__":  # python -m ddmlflow.pipeline.estimate ROUTE CONFIG_JSON
    import ddmlflow  # noqa: F401 - the package's CPU kernels, before TensorFlow starts

    print(json.dumps(measure(from_json(sys.argv[2], RunConfig), sys.argv[1])))
