"""Packed training (packed_training.py) against separate training, per-branch early stopping, and resume.

Tiny data (generated shapes, 32x32), tiny nets; every comparison is between two
real trainings, never against stored numbers.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import predict_two_step

keras = pytest.importorskip("keras")

TOL = 1e-5  # float32 rounding: the packed step sums N losses and runs N nets in one graph


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    from ddmlflow import data
    from ddmlflow.decomposition import make
    from ddmlflow.pipeline.prepared import Prepared

    ds = data.load("shapes2d", n_train=96, n_val=48, cache_dir=str(tmp_path_factory.mktemp("cache")), progress=False)
    dec = make("2x2", ds.x_train.shape[1:], overlap=2)
    return dataclasses.replace(Prepared.of(ds, dec), augment=None)


def config(**kw):
    from ddmlflow.config import resolve

    return dataclasses.replace(resolve("shapes2d-vgg3-2x2"), **{"epochs": 1, "batch_size": 16, "patience": 0, **kw})


def max_diff(a: keras.Model, b: keras.Model) -> float:
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a.get_weights(), b.get_weights()))


def separate(cfg, prep, box: int, **kw):
    """A local trained alone by training.fit, seeded as pipeline/train.py, in the packed group's batch order."""
    from ddmlflow import models
    from ddmlflow.training import FitConfig, fit, seed_everything

    seed_everything(cfg.seed + 1 + box)
    net = models.build(
        cfg.model,
        prep.decomposition.input_shape(box),
        prep.num_classes,
        width_divisor=cfg.width_divisor,
        name=f"local_{box:02d}",
    )
    fc = FitConfig(
        cfg.epochs,
        cfg.batch_size,
        cfg.learning_rate,
        cfg.optimizer,
        cfg.patience,
        seed=cfg.seed,
        precision=cfg.precision,
    )
    data = prep.box(box)
    train_x = prep.augmented_train(box, fc) if prep.augment else data[0]  # as pipeline/train.py feeds fit
    return net, fit(net, (train_x, *data[1:]), prep.num_classes, fc, log_to_mlflow=False, **kw)


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop"])
def test_packed_equals_separate_after_one_epoch(prep, optimizer):
    from ddmlflow.packed_training import train_packed

    cfg = config(optimizer=optimizer, learning_rate=0.01 if optimizer == "sgd" else 1e-3)
    boxes = list(range(prep.decomposition.n))
    packed = train_packed(cfg, prep, boxes, [f"run{b}" for b in boxes], None)
    for r in packed:
        alone, summary = separate(cfg, prep, r.box)
        assert r.epochs_run == summary["epochs_run"] == 1
        assert max_diff(r.model, alone) < TOL, f"box {r.box}"
        assert r.model.input_shape == alone.input_shape and r.model.name == alone.name
        # the reported accuracy is the returned model's accuracy on the validation data
        x, _, xv, yv = prep.box(r.box)
        acc = np.mean(np.argmax(r.model.predict(xv, verbose=0), 1) == yv)
        assert r.history["val_accuracy"][-1] == pytest.approx(acc)
    w0 = [r.model.get_weights()[0] for r in packed]
    assert not np.allclose(w0[0], w0[1]), "branches must be initialised from their own seeds"


def test_early_stopping_is_per_branch(prep):
    """A branch stops (and is restored to its best epoch) while others go on; each branch's result
    is what it would be if trained in a group of its own, so the rest of the group changes nothing."""
    from ddmlflow.checkpoint import EarlyStop
    from ddmlflow.packed_training import train_packed

    cfg = config(epochs=8, patience=1, learning_rate=3e-3)
    boxes = list(range(prep.decomposition.n))
    group = train_packed(cfg, prep, boxes, [""] * len(boxes), None)
    runs = [r.epochs_run for r in group]
    assert min(runs) < max(runs), f"the test needs branches that stop at different epochs: {runs}"
    for r in group:
        assert len(r.history["val_accuracy"]) == r.epochs_run
        replay = EarlyStop(cfg.patience)  # the rule, replayed on the branch's own learning curve
        stops = [replay.update(e, v, lambda: []) for e, v in enumerate(r.history["val_accuracy"])]
        assert stops.index(True) + 1 == r.epochs_run if True in stops else r.epochs_run == cfg.epochs
        assert r.best_epoch == replay.best_epoch
        xv, yv = prep.box(r.box)[2:]
        acc = np.mean(np.argmax(r.model.predict(xv, verbose=0), 1) == yv)
        assert acc == pytest.approx(r.history["val_accuracy"][r.best_epoch])  # best weights restored
    first, last = runs.index(min(runs)), runs.index(max(runs))
    for k in (first, last):
        alone = train_packed(cfg, prep, [boxes[k]], [""], None)[0]
        assert alone.epochs_run == group[k].epochs_run
        assert max_diff(alone.model, group[k].model) < TOL


@pytest.mark.slow
def test_group_resumes_after_interruption(prep, tmp_path):
    from ddmlflow.packed_training import CHECKPOINT, train_packed

    cfg = config(epochs=5, patience=1, learning_rate=3e-3)
    boxes = list(range(prep.decomposition.n))
    whole = train_packed(cfg, prep, boxes, [""] * len(boxes), None)

    def die_after_epoch_2(k, epoch, metrics):
        if epoch == 2:  # before epoch 2's checkpoint: the resumed group redoes epoch 2
            raise Interrupt

    with pytest.raises(Interrupt):
        train_packed(cfg, prep, boxes, [""] * len(boxes), tmp_path, die_after_epoch_2)
    assert (tmp_path / CHECKPOINT).exists()
    resumed = train_packed(cfg, prep, boxes, [""] * len(boxes), tmp_path)
    assert not (tmp_path / CHECKPOINT).exists()
    for a, b in zip(whole, resumed):
        assert (a.epochs_run, a.best_epoch) == (b.epochs_run, b.best_epoch)
        assert a.history == b.history
        assert max_diff(a.model, b.model) == 0.0


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_fit_is_the_packed_loop_for_one_net(prep, precision):
    """N = 1: Keras ``fit`` (the engine of the global, coarse and strategy nets and of the tuner's trials) and
    the packed loop train alike, in either precision: the same epochs, early stop and best epoch restored, the
    same per-epoch metrics and weights; both compute in ``precision`` while training and return float32 nets."""
    from ddmlflow.packed_training import train_packed
    from ddmlflow.training import EPOCH_METRICS

    cfg = config(epochs=6, patience=1, learning_rate=3e-3, precision=precision)
    seen: dict = {k: [] for k in EPOCH_METRICS}
    compute: set = set()

    class Log(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            compute.update((layer.name == "probs", layer.compute_dtype) for layer in self.model.layers[1:])
            for k in seen:
                seen[k].append(float(logs[k]))

    loop = train_packed(cfg, prep, [0], [""], None)[0]
    alone, summary = separate(cfg, prep, 0, callbacks=[Log()])
    assert loop.epochs_run < cfg.epochs, "the test needs a net that stops early"
    assert (summary["epochs_run"], summary["best_epoch"]) == (loop.epochs_run, loop.best_epoch)
    for k in EPOCH_METRICS:
        np.testing.assert_allclose(seen[k], loop.history[k], atol=TOL, err_msg=k)
    assert max_diff(alone, loop.model) < TOL
    low = "bfloat16" if precision == "mixed_bfloat16" else "float32"
    assert compute == {(False, low), (True, "float32")}  # while training: probabilities in float32 only
    for net in (alone, loop.model):  # returned: float32 throughout, as logged and served
        assert {layer.compute_dtype for layer in net.layers} == {"float32"}
        assert net.predict(prep.box(0)[2][:2], verbose=0).dtype == np.float32


def test_fit_resumes_with_early_stopping_state(prep, tmp_path):
    """training.fit killed after epoch 2 and resumed ends exactly as an uninterrupted fit."""
    cfg = config(epochs=6, patience=2, learning_rate=3e-3)

    class DieAfter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                raise Interrupt

    whole, s_whole = separate(cfg, prep, 0)
    with pytest.raises(Interrupt):
        separate(cfg, prep, 0, checkpoint_dir=tmp_path, callbacks=[DieAfter()])
    assert (tmp_path / "fit.npz").exists()
    resumed, s_resumed = separate(cfg, prep, 0, checkpoint_dir=tmp_path)
    assert (s_whole["epochs_run"], s_whole["best_epoch"]) == (s_resumed["epochs_run"], s_resumed["best_epoch"])
    assert max_diff(whole, resumed) == 0.0


def test_served_cnn_dnn_is_one_program_equal_to_two_steps(prep, tmp_path):
    """The pyfunc runs crop -> locals -> coarse as one Keras model; same numbers as the two-step path."""
    import json

    from mlflow.exceptions import MlflowException

    from ddmlflow import models
    from ddmlflow.serving import CNNDNNModel

    dec, k = prep.decomposition, prep.num_classes
    art = {"decomposition": tmp_path / "d.json", "meta": tmp_path / "m.json", "coarse": tmp_path / "coarse.keras"}
    art["decomposition"].write_text(dec.to_json())
    art["meta"].write_text(json.dumps({"class_names": prep.class_names}))
    nets = [models.build("vgg3", dec.input_shape(i), k, 2, name="local") for i in range(dec.n)]  # same names
    coarse = models.build_coarse(dec.n, k)
    coarse.save(art["coarse"])
    for i, net in enumerate(nets):
        art[f"local_{i:02d}"] = tmp_path / f"local_{i:02d}.keras"
        net.save(art[f"local_{i:02d}"])
    model = CNNDNNModel()
    model.load_context(type("Ctx", (), {"artifacts": {a: str(p) for a, p in art.items()}})())
    assert isinstance(model.program, keras.Model) and model.class_names == prep.class_names
    x = np.asarray(prep.x_val[:20], dtype="float32")
    out = model.predict(None, x)  # a label column, then one probability column per class name
    assert list(out.columns) == ["label", *prep.class_names]
    np.testing.assert_allclose(
        out.drop(columns="label").to_numpy(dtype="float64"), predict_two_step(nets, coarse, dec, x), atol=1e-5
    )
    with pytest.raises(MlflowException, match="does not match"):
        model.predict(None, x[:, :8])


@pytest.mark.slow
@pytest.mark.parametrize(
    "model,spec,shape",
    [("vgg3", "typeB", (32, 32, 3)), ("resnet20", "2x2", (31, 31, 3)), ("cnn3d", "2x2x1", (16, 16, 8, 1))],
)
def test_packs_any_network_and_box_sizes(model, spec, shape):
    """Boxes of different sizes (type B; 2x2 of 31 pixels) and 3D volumes pack together; nets with
    batch normalisation (resnet20, cnn3d) match separate training, moving statistics included."""
    from ddmlflow.decomposition import make
    from ddmlflow.packed_training import train_packed
    from ddmlflow.pipeline.prepared import Prepared

    rng = np.random.default_rng(1)
    dec = make(spec, shape)
    x, xv = rng.random((40, *shape), dtype=np.float32), rng.random((16, *shape), dtype=np.float32)
    p = Prepared(x, rng.integers(0, 2, 40), xv, rng.integers(0, 2, 16), ["a", "b"], dec, "random", None)
    cfg = config(model=model)
    sizes = {dec.boxes[i].shape for i in range(dec.n)}
    assert len(sizes) > 1 or model == "cnn3d"
    packed = train_packed(cfg, p, list(range(dec.n)), [""] * dec.n, None)
    for r in packed:
        assert r.model.input_shape[1:] == dec.input_shape(r.box)
    for box in {0, dec.n - 1}:  # boxes of different sizes in 2D
        alone, _ = separate(cfg, p, box)
        assert max_diff(packed[box].model, alone) < TOL


@pytest.fixture(scope="module")
def rotated():
    """3D volumes with the CT augmentation (``rotate3d``): an off-centre block per volume, which every
    rotation moves."""
    from ddmlflow.decomposition import make
    from ddmlflow.pipeline.prepared import Prepared

    rng = np.random.default_rng(2)
    shape = (16, 16, 8, 1)
    x = np.zeros((24, *shape), np.float32)
    for v in x:
        r, c = rng.integers(1, 9, 2)
        v[r : r + 6, c : c + 6] = rng.uniform(0.5, 1.0)
    xv = rng.random((8, *shape), dtype=np.float32)
    return Prepared(x, np.arange(24) % 2, xv, np.arange(8) % 2, ["a", "b"], make("2x2x1", shape), "t", "rotate3d")


@pytest.mark.slow
def test_packed_equals_separate_with_rotate3d_augmentation(rotated):
    """Augmentation drawn per sample (``batches``): a packed local and the same local trained alone by
    ``fit`` (the process and Ray executors' route) see the same rotated volumes, so their weights agree
    after two epochs; the batches really are rotated (a training without augmentation differs)."""
    from ddmlflow.packed_training import train_packed

    cfg = config(model="cnn3d", epochs=2, batch_size=5)
    packed = train_packed(cfg, rotated, list(range(rotated.decomposition.n)), [""] * rotated.decomposition.n, None)
    for r in packed:
        alone, _ = separate(cfg, rotated, r.box)
        assert max_diff(r.model, alone) < TOL, f"box {r.box}"
    plain, _ = separate(cfg, dataclasses.replace(rotated, augment=None), 0)
    assert max_diff(packed[0].model, plain) > 1e-3


@pytest.mark.slow
def test_fit_resumed_with_augmentation_equals_uninterrupted(rotated, tmp_path):
    """A training with ``rotate3d`` killed after epoch 1 and resumed draws epoch 2's rotations as an
    uninterrupted one does: the same weights."""
    cfg = config(model="cnn3d", epochs=3, batch_size=5)

    class DieAfter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise Interrupt

    whole, _ = separate(cfg, rotated, 1)
    with pytest.raises(Interrupt):
        separate(cfg, rotated, 1, checkpoint_dir=tmp_path, callbacks=[DieAfter()])
    resumed, _ = separate(cfg, rotated, 1, checkpoint_dir=tmp_path)
    assert max_diff(whole, resumed) == 0.0


def test_a_sample_draws_the_same_rotation_in_any_batch():
    """The same sample, epoch and seed: the same pixels, whatever batch (size, position) holds it."""
    from ddmlflow.batches import train_batch

    rng = np.random.default_rng(3)
    x = rng.random((10, 12, 12, 4, 1), dtype=np.float32)
    y = np.arange(10)
    a, ya = train_batch(x, y, np.array([7, 2, 5]), "rotate3d", seed=4, epoch=1)
    b, yb = train_batch(x, y, np.array([5, 9, 0, 7]), "rotate3d", seed=4, epoch=1)
    np.testing.assert_array_equal(a[0], b[3])  # sample 7
    np.testing.assert_array_equal(a[2], b[0])  # sample 5
    assert list(ya) == [7, 2, 5] and list(yb) == [5, 9, 0, 7]
    every = np.arange(10)
    e1, e2, s5 = (train_batch(x, y, every, "rotate3d", seed=s, epoch=e)[0] for s, e in [(4, 1), (4, 2), (5, 1)])
    assert any(not np.array_equal(e1[k], e2[k]) for k in every)  # another epoch: new draws
    assert any(not np.array_equal(e1[k], s5[k]) for k in every)  # another seed: new draws


def test_epoch_logger_logs_each_epoch_once_across_resumes(mlflow_env):
    import mlflow

    from ddmlflow.training import epoch_logger

    ids = [
        mlflow.MlflowClient().create_run(mlflow.set_experiment("packed").experiment_id).info.run_id for _ in range(2)
    ]
    first = epoch_logger(ids)
    first(0, 0, {"loss": 1.0, "accuracy": 0.5})
    first(1, 0, {"loss": 2.0, "accuracy": 0.5})
    again = epoch_logger(ids)  # a resumed attempt redoes epoch 0
    again(0, 0, {"loss": 9.0, "accuracy": 0.9})
    again(0, 1, {"loss": 0.5, "accuracy": 0.7})
    hist = mlflow.MlflowClient().get_metric_history(ids[0], "loss")
    assert sorted((m.step, m.value) for m in hist) == [(0, 1.0), (1, 0.5)]
    assert [m.value for m in mlflow.MlflowClient().get_metric_history(ids[1], "loss")] == [2.0]
