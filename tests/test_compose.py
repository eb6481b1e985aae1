"""One-model CNN-DNN (KLW-TL) and sub-network composition (Gu et al., Theorem 2.1)."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ddmlflow import models  # noqa: E402
from ddmlflow.decomposition import make  # noqa: E402
from ddmlflow.errors import InputError  # noqa: E402
from ddmlflow.models import layers as L  # noqa: E402
from ddmlflow.models.cnn_dnn import build_coherent, build_coherent_from_scratch, predict_two_step  # noqa: E402
from ddmlflow.models.compose import compose, theorem_error  # noqa: E402


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


@pytest.mark.parametrize("model,shape,spec,k", [("vgg3", (16, 16, 3), "2x2", 5),
                                                ("cnn3d", (8, 8, 4, 1), "2x2x1", 2)])
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


@pytest.mark.parametrize("shape,spec,k,stacks,dense", [
    ((24, 24, 2), "2x2", 3, ((16, 16), (32,)), 32),  # 12x12 boxes: 12-2-2=8, pool 4, -2=2, pool 1
    ((16, 16, 8, 1), "2x2x2", 2, ((16,),), 32),     # 8x8x4 boxes, one sigmoid unit
    ((24, 24, 2), "2x2", 3, ((8,),), 0),            # flatten straight into the logits
])
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


@pytest.mark.parametrize("model,shape,spec", [("vgg3", (16, 16, 3), "2x2"), ("vgg9", (16, 16, 3), "2x2"),
                                              ("resnet20", (16, 16, 3), "2x2"), ("cnn3d", (8, 8, 4, 1), "2x2x1")])
def test_compose_paper_nets(model, shape, spec):
    d = make(spec, shape)
    subs = [randomize(models.build(model, d.input_shape(i), 5, d.n), i) for i in range(d.n)]
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
    np.testing.assert_array_equal(head[0], np.concatenate([s.get_layer("logits").get_weights()[0] for s in subs]))


def test_block_diagonal_structure():
    d = make("2x2", (16, 16, 3))
    subs = [randomize(models.build("vgg3", d.input_shape(i), 4, 4), i) for i in range(4)]
    g = compose(subs, d, models.build("vgg3", (16, 16, 3), 4))
    w1 = g.get_layer("conv1_1").get_weights()[0]  # (3, 3, 3, 32): all inputs -> block k
    for k, s in enumerate(subs):
        np.testing.assert_array_equal(w1[..., 8 * k:8 * k + 8], s.get_layer("conv1_1").get_weights()[0])
    w, b = g.get_layer("conv2_1").get_weights()  # (3, 3, 32, 64), blocks of 8 in, 16 out
    for i in range(4):
        for j in range(4):
            block = w[:, :, 8 * i:8 * i + 8, 16 * j:16 * j + 16]
            if i == j:
                np.testing.assert_array_equal(block, subs[i].get_layer("conv2_1").get_weights()[0])
            else:
                assert not block.any()
    np.testing.assert_array_equal(b, np.concatenate([s.get_layer("conv2_1").get_weights()[1] for s in subs]))
    # flatten (2, 2, 128) -> dense1: sub k (1x1 field, 32 channels) sits at its box's cell only
    dense = g.get_layer("dense1").get_weights()[0].reshape(2, 2, 128, 128)
    for k, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        col = dense[..., 32 * k:32 * k + 32]
        np.testing.assert_array_equal(col[r, c, 32 * k:32 * k + 32], subs[k].get_layer("dense1").get_weights()[0])
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
