"""One-model CNN-DNN (KLW-TL) and sub-network composition (Gu et al., Theorem 2.1)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from conftest import predict_two_step
from ddmlflow import models
from ddmlflow.decomposition import make
from ddmlflow.errors import InputError
from ddmlflow.models import layers as L
from ddmlflow.models.cnn_dnn import build_coherent, build_coherent_from_scratch
from ddmlflow.models.compose import check, compose, theorem_error
from ddmlflow.models.resnet import shortcut_a


def randomize(model: keras.Model, seed: int) -> keras.Model:
    """Non-trivial weights everywhere (BN statistics too), so every composed block is tested."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        v = rng.normal(0.0, 0.3, w.shape)
        w.assign(np.abs(v) + 0.5 if "variance" in w.path else v)
    return model


def images(shape, n=3, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


# -- coherent CNN-DNN ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model,shape,spec,k", [("vgg3", (16, 16, 3), "2x2", 5), ("cnn3d", (8, 8, 4, 1), "2x2x1", 2)])
def test_coherent_equals_two_step(model, shape, spec, k, tmp_path):
    d = make(spec, shape)
    locals_ = [randomize(models.build(model, d.input_shape(i), k, 4, name="local"), i) for i in range(d.n)]
    coarse = randomize(models.build_coarse(d.n, k, hidden=(16, 8)), 99)
    net = build_coherent(locals_, coarse, d)  # duplicate local names are fine
    x = images(shape, 5)
    two_step = predict_two_step(locals_, coarse, d, x)
    one = models.to_probabilities(net.predict(x, verbose=0))
    assert np.max(np.abs(one - two_step)) < 1e-5
    assert not np.allclose(two_step, two_step[:1])  # the inputs matter
    net.save(tmp_path / "m.keras")  # BoxCrop is serialisable and safe_mode loads it
    again = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(again.predict(x, verbose=0), net.predict(x, verbose=0), atol=1e-6)


def test_coherent_from_scratch_shapes_and_sharing():
    d = make("2x2", (16, 16, 3))
    net = build_coherent_from_scratch("vgg3", d, 6, 4, (16,), 0.0)
    assert net.output_shape == (None, 6)
    assert [net.get_layer(f"crop_{i:02d}").output.shape[1:3] for i in range(4)] == [(8, 8)] * 4
    assert net.get_layer("coarse").input.shape == (None, 4 * 6)
    with pytest.raises(InputError, match="local_models"):
        build_coherent([models.build("vgg3", (8, 8, 3), 6, 4)], models.build_coarse(1, 6), d)


# -- composition -----------------------------------------------------------------------------------


def tiny_valid_net(shape, k, divisor=1, stacks=((8, 8), (16,)), dense=16, name="tiny") -> keras.Model:
    """A VGG-type net in Theorem 2.1's setting: valid padding, pooling, BN, flatten, no global pooling."""
    dims = len(shape) - 1
    x = inputs = keras.Input(shape)
    for s, stack in enumerate(stacks, start=1):
        for i, f in enumerate(stack, start=1):
            x = L.conv(dims, f // divisor, 3, padding="valid", activation="relu", name=f"conv{s}_{i}")(x)
        x = L.max_pool(dims, 2, name=f"pool{s}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{s}")(x)
    x = keras.layers.Flatten(name="flatten")(keras.layers.Dropout(0.2, name="drop")(x))
    if dense:
        x = keras.layers.Dense(dense // divisor, activation="relu", name="dense1")(x)
    return keras.Model(inputs, L.head(x, k), name=name)


@pytest.mark.parametrize(
    "shape,spec,k,stacks,dense",
    [
        ((24, 24, 2), "2x2", 3, ((16, 16), (32,)), 32),  # 12x12 boxes: 12-2-2=8, pool 4, -2=2, pool 1
        ((16, 16, 8, 1), "2x2x2", 2, ((16,),), 32),  # 8x8x4 boxes, one sigmoid unit
        ((24, 24, 2), "2x2", 3, ((8,),), 0),  # flatten straight into the logits
    ],
)
def test_theorem_2_1_composed_logits_are_the_sum(shape, spec, k, stacks, dense):
    d = make(spec, shape)
    subs = [randomize(tiny_valid_net(d.input_shape(i), k, d.n, stacks, dense), i) for i in range(d.n)]
    glob = randomize(tiny_valid_net(shape, k, 1, stacks, dense), 123)
    x = images(shape, 4) * np.arange(1, 5, dtype=np.float32).reshape(-1, *[1] * len(shape))  # varied contrast
    before = theorem_error(subs, glob, d, x)
    composed = compose(subs, d, glob)
    assert composed is glob
    assert before > 1e-2  # a random global net does not satisfy it
    after = theorem_error(subs, composed, d, x)
    logits = composed.get_layer("logits").output
    spread = np.ptp(np.asarray(keras.Model(composed.inputs[0], logits)(x)), axis=0).min()
    assert spread > 0.1  # the logits depend on the image: the check is not vacuous
    print(f"Theorem 2.1 {shape}: max abs err {before:.3g} -> {after:.3g}")
    assert after < 1e-4


def tiny_option_a_net(shape, k, divisor=1, widths=(8, 16, 32), name="tiny_a") -> keras.Model:
    """Option-A residual net in Theorem 2.1's setting: a valid 3x3 stem, then blocks of 1x1 convs
    (no padding, nothing crosses a box border) whose first block per width strides by 2 and whose
    shortcut subsamples and zero-pads the channels, as in resnet20a; BN; flatten; dense; logits."""
    dims = len(shape) - 1
    x = inputs = keras.Input(shape)
    x = L.conv(dims, widths[0] // divisor, 3, padding="valid", name="stem_conv")(x)
    x = keras.layers.Activation("relu", name="stem_relu")(keras.layers.BatchNormalization(name="stem_bn")(x))
    for s, w in enumerate(widths[1:], start=1):
        w //= divisor
        y = L.conv(dims, w, 1, strides=2, name=f"b{s}_conv1")(x)
        y = keras.layers.Activation("relu", name=f"b{s}_relu")(keras.layers.BatchNormalization(name=f"b{s}_bn1")(y))
        y = keras.layers.BatchNormalization(name=f"b{s}_bn2")(L.conv(dims, w, 1, name=f"b{s}_conv2")(y))
        x = keras.layers.Activation("relu", name=f"b{s}_out")(
            keras.layers.Add(name=f"b{s}_add")([y, shortcut_a(x, dims, w, 2, f"b{s}")])
        )
    x = keras.layers.Dense(16 // divisor, activation="relu", name="dense1")(keras.layers.Flatten(name="flatten")(x))
    return keras.Model(inputs, L.head(x, k), name=name)


@pytest.mark.parametrize(
    "shape,spec,k",
    [
        ((24, 24, 2), "2x2", 3),  # 12x12 boxes: stem 10, then 5, 3
        ((24, 24, 8, 1), "2x2x2", 2),
    ],
)  # 12x12x4 boxes, one sigmoid unit
def test_theorem_2_1_through_option_a_shortcuts(shape, spec, k):
    """resnet20a's shortcuts: sub k's channels at the wider stage are its old channels (kept in place by
    the global shortcut) plus its share of the padded zeros; with that map the composition is exact."""
    d = make(spec, shape)
    subs = [randomize(tiny_option_a_net(d.input_shape(i), k, d.n), i) for i in range(d.n)]
    glob = randomize(tiny_option_a_net(shape, k), 123)
    x = images(shape, 4) * np.arange(1, 5, dtype=np.float32).reshape(-1, *[1] * len(shape))
    before = theorem_error(subs, glob, d, x)
    composed = compose(subs, d, glob)
    after = theorem_error(subs, composed, d, x)
    spread = np.ptp(np.asarray(keras.Model(composed.inputs[0], composed.get_layer("logits").output)(x)), axis=0)
    print(f"Theorem 2.1 option A {shape}: max abs err {before:.3g} -> {after:.3g}")
    assert before > 1e-2 and spread.min() > 0.1 and after < 1e-4
    # the map itself: 8 -> 16 channels, sub k (a -> 2a, a = 8 / N) owns global [ak, ak + a) and [8 + ak, 8 + ak + a)
    w = composed.get_layer("b1_conv2").get_weights()[0].reshape(16, 16)  # 1x1 conv: (in, out)
    a = 8 // d.n
    for i, sub in enumerate(subs):
        own = np.r_[a * i : a * i + a, 8 + a * i : 8 + a * i + a]
        sub_w = sub.get_layer("b1_conv2").get_weights()[0].reshape(2 * a, 2 * a)
        np.testing.assert_array_equal(w[np.ix_(own, own)], sub_w)
        assert np.count_nonzero(w[:, own]) == np.count_nonzero(sub.get_layer("b1_conv2").get_weights()[0])


def test_resnet20a_composes_where_the_padding_fits_and_fails_early_elsewhere():
    for spec, ok in (("2x2", True), ("4x4", True), ("3x3", False)):
        d = make(spec, (24, 24, 3))
        subs = [models.build("resnet20a", d.input_shape(i), 4, d.n) for i in range(d.n)]
        glob = models.build("resnet20a", (24, 24, 3), 4)
        if ok:
            check(subs, d, glob)
        else:  # 9 subs pad 9 x (32 // 9 - 16 // 9) = 18 channels, the global net 16
            with pytest.raises(InputError, match="resnet20a.*model=resnet20"):
                check(subs, d, glob)
            check(
                [models.build("resnet20", d.input_shape(i), 4, d.n) for i in range(d.n)],
                d,
                models.build("resnet20", (24, 24, 3), 4),
            )  # projections compose for any N


def test_compose_step_fails_before_training_where_resnet20a_cannot_compose(mlflow_env):
    """3x3 boxes with resnet20a: one InputError naming what works, before any sub-network is trained."""
    import mlflow

    from ddmlflow import config
    from ddmlflow.pipeline import strategies
    from ddmlflow.pipeline.decompose import decompose

    cfg = config.resolve(
        "", dataset="shapes2d", model="resnet20a", decomposition="3x3", n_train="32", n_val="16", epochs="1"
    )
    with mlflow.start_run() as r:
        decompose(cfg)
    with mlflow.start_run() as run, pytest.raises(InputError, match="2x2, 4x4, type B"):
        strategies.compose_step(cfg, r.info.run_id)
    history = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "subnet_val_accuracy")
    assert history == [] and "loss" not in mlflow.get_run(run.info.run_id).data.metrics


@pytest.mark.parametrize(
    "model,shape,spec",
    [
        ("vgg3", (16, 16, 3), "2x2"),
        ("vgg9", (16, 16, 3), "2x2"),
        ("resnet20", (16, 16, 3), "2x2"),
        ("resnet20a", (16, 16, 3), "2x2"),
        ("cnn3d", (8, 8, 4, 1), "2x2x1"),
    ],
)
def test_compose_paper_nets(model, shape, spec):
    d = make(spec, shape)
    subs = [randomize(models.build(model, d.input_shape(i), 5, d.n, klw_local=False), i) for i in range(d.n)]
    glob = randomize(models.build(model, shape, 5), 123)  # weights of the sub-nets' scale
    count = glob.count_params()
    x = images(shape)
    before = theorem_error(subs, glob, d, x)
    composed = compose(subs, d, glob)
    assert composed.output_shape == (None, 5) and composed.count_params() == count
    probs = composed.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    # same padding / GAP: approximate only (errors at the box borders), but every layer, BN statistics
    # included, now comes from the sub-nets: far closer to their sum than the random net of the same scale
    after = theorem_error(subs, composed, d, x)
    assert 0 < after < before / 10, (before, after)
    # the logits add up exactly: stacked kernels, summed biases
    head = composed.get_layer("logits").get_weights()
    np.testing.assert_allclose(head[1], sum(s.get_layer("logits").get_weights()[1] for s in subs), atol=1e-6)
    order = np.arange(len(head[0]))
    if model == "resnet20a":  # option A, N = 4: sub k's 16 GAP channels are its 4 + 4 + 8 of the 16, 32, 64 stages
        order = np.concatenate(
            [np.r_[4 * k : 4 * k + 4, 16 + 4 * k : 20 + 4 * k, 32 + 8 * k : 40 + 8 * k] for k in range(4)]
        )
    stacked = np.concatenate([s.get_layer("logits").get_weights()[0] for s in subs])
    np.testing.assert_array_equal(head[0][order], stacked)


def test_block_diagonal_structure():
    d = make("2x2", (16, 16, 3))
    subs = [randomize(models.build("vgg3", d.input_shape(i), 4, 4), i) for i in range(4)]
    g = compose(subs, d, models.build("vgg3", (16, 16, 3), 4))
    w1 = g.get_layer("conv1_1").get_weights()[0]  # (3, 3, 3, 32): all inputs -> block k
    for k, s in enumerate(subs):
        np.testing.assert_array_equal(w1[..., 8 * k : 8 * k + 8], s.get_layer("conv1_1").get_weights()[0])
    w, b = g.get_layer("conv2_1").get_weights()  # (3, 3, 32, 64), blocks of 8 in, 16 out
    for i in range(4):
        for j in range(4):
            block = w[:, :, 8 * i : 8 * i + 8, 16 * j : 16 * j + 16]
            if i == j:
                np.testing.assert_array_equal(block, subs[i].get_layer("conv2_1").get_weights()[0])
            else:
                assert not block.any()
    np.testing.assert_array_equal(b, np.concatenate([s.get_layer("conv2_1").get_weights()[1] for s in subs]))
    # flatten (2, 2, 128) -> dense1: sub k (1x1 field, 32 channels) sits at its box's cell only
    dense = g.get_layer("dense1").get_weights()[0].reshape(2, 2, 128, 128)
    for k, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        col = dense[..., 32 * k : 32 * k + 32]
        np.testing.assert_array_equal(col[r, c, 32 * k : 32 * k + 32], subs[k].get_layer("dense1").get_weights()[0])
        assert np.count_nonzero(col) == np.count_nonzero(subs[k].get_layer("dense1").get_weights()[0])


def test_bn_concatenated_and_unowned_channels_do_not_reach_the_logits():
    d = make("3x3", (9, 9, 1))  # N = 9: 16 // 9 = 1 channel each, 7 of 16 unowned
    subs = [randomize(models.build("resnet20", d.input_shape(i), 3, 9), i) for i in range(9)]
    g = compose(subs, d, models.build("resnet20", (9, 9, 1), 3))
    mean = g.get_layer("stem_bn").get_weights()[2]
    np.testing.assert_array_equal(mean[:9], [s.get_layer("stem_bn").get_weights()[2][0] for s in subs])
    head = g.get_layer("logits").get_weights()[0]  # 64 inputs, 9 x 7 owned
    assert not head[63:].any() and head[:63].any()


def test_compose_rejects_mismatched_inputs():
    d = make("2x2", (16, 16, 3))
    subs = [models.build("vgg3", d.input_shape(i), 4, 4) for i in range(4)]
    with pytest.raises(InputError, match="sub_models"):
        compose(subs[:3], d, models.build("vgg3", (16, 16, 3), 4))
    with pytest.raises(InputError, match="global_model"):
        compose(subs, d, models.build("vgg3", (8, 8, 3), 4))
    wide = [models.build("vgg3", d.input_shape(i), 4, 1) for i in range(4)]
    with pytest.raises(InputError, match="at most the global width"):
        compose(wide, d, models.build("vgg3", (16, 16, 3), 4))


# -- Gu et al.'s step learning-rate schedules ------------------------------------------------------


def test_gc_schedules_at_gc_lengths_and_shrunk():
    from ddmlflow import lr_schedules as S

    assert S.drop_epochs(120, S.GC_SUB) == [(60, 0.1), (80, 0.1), (100, 0.1)]  # GC sec. 3.1.1, as printed
    assert S.drop_epochs(80, S.GC_FURTHER) == [(20, 0.1), (40, 0.1), (60, 0.5)]
    assert S.drop_epochs(200, S.GC_GLOBAL) == [(80, 0.1), (140, 0.1), (160, 0.1), (180, 0.5)]
    assert S.drop_epochs(12, S.GC_SUB) == [(6, 0.1), (8, 0.1), (10, 0.1)]  # same fractions of the phase
    assert S.drop_epochs(4, S.GC_FURTHER) == [(1, 0.1), (2, 0.1), (3, 0.5)]
    assert S.drop_epochs(3, S.GC_SUB) == [(2, pytest.approx(1e-3))]  # 1.5, 2.0, 2.5 all round to 2: merged
    assert S.step_schedule(1e-3, 1, 10, S.GC_SUB) == 1e-3  # one epoch: nothing drops
    rate = S.step_schedule(1e-3, 200, 10, S.GC_GLOBAL)
    for epoch, expected in ((0, 1e-3), (79, 1e-3), (80, 1e-4), (140, 1e-5), (160, 1e-6), (180, 5e-7), (199, 5e-7)):
        assert float(rate(epoch * 10)) == pytest.approx(expected), epoch  # first step of the epoch
        assert float(rate(epoch * 10 + 9)) == pytest.approx(expected), epoch  # last step


def test_a_schedule_drives_the_optimizer_in_fit():
    from ddmlflow import lr_schedules as S
    from ddmlflow.training import FitConfig, fit

    x, y = images((8, 8, 1), 16), np.arange(16) % 2
    net = tiny_valid_net((8, 8, 1), 2, stacks=((4,),), dense=0)
    rate = S.step_schedule(1e-2, 2, 2, (2, ((1, 0.1),)))  # 16 images / batch 8 = 2 steps per epoch
    fit(net, (x, y, x, y), 2, FitConfig(epochs=2, batch_size=8, learning_rate=rate, patience=0), log_to_mlflow=False)
    assert int(net.optimizer.iterations) == 4
    assert float(rate(1)) == pytest.approx(1e-2) and float(rate(2)) == pytest.approx(1e-3)
    assert float(net.optimizer.learning_rate) == pytest.approx(1e-3)
