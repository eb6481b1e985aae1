"""The papers' networks: exact parameter counts (KLW Table 2), shapes, 2D/3D, K = 2."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from ddmlflow import models
from ddmlflow.errors import InputError


def trainable(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def layer_types(model: keras.Model, cls) -> list:
    return [layer for layer in model.layers if isinstance(layer, cls)]


@pytest.mark.parametrize(
    "model,shape,k,wd,count",
    [
        ("vgg3", (32, 32, 3), 10, 1, 550_570),  # CIFAR-10 global (Table 2: 0.5506M)
        ("vgg3", (16, 16, 3), 10, 2, 89_178),  # CIFAR-10 2x2 local (0.0892M)
        ("vgg3", (60, 60, 3), 5, 2, 273_173),  # TF-Flowers 3x3 local (0.2732M)
        ("vgg3", (48, 42, 1), 38, 2, 197_206),  # Yale B 4x4 local (0.1972M)
        ("vgg9", (32, 32, 3), 10, 1, 4_786_794),  # CIFAR-10 global (4.7868M)
        ("vgg9", (180, 180, 3), 5, 1, 6_359_333),  # TF-Flowers global (6.3593M)
        ("vgg9", (16, 16, 3), 10, 2, 1_195_866),  # CIFAR-10 2x2 local (1.1959M), KLW's local form
        ("vgg9", (60, 60, 3), 5, 2, 1_326_613),  # TF-Flowers 3x3 local (1.3266M), KLW's local form
        ("cnn3d", (128, 128, 64, 1), 2, 1, 1_352_897),  # CT global (1.3529M)
        ("cnn3d", (64, 64, 64, 1), 2, 2, 339_553),  # CT 2x2x1 local (0.3396M)
    ],
)
def test_total_parameter_counts_match_klw_table2(model, shape, k, wd, count):
    assert models.build(model, shape, k, width_divisor=wd).count_params() == count


def test_vgg9_relu_layers_start_from_he_and_vgg3_from_keras_default():
    """VGG9's 10-layer ReLU stack from Glorot collapsed to a constant output in 3 of 4 CIFAR-10 locals
    (README, "Results at the cpu budget"); He keeps it alive. VGG3 keeps Keras' default, as KLW."""

    def inits(net):
        return {
            type(layer.kernel_initializer).__name__ for layer in net.layers if layer.name.startswith(("conv", "dense"))
        }

    for net in (models.build("vgg9", (16, 16, 3), 10, 2), models.build("vgg9", (32, 32, 3), 10)):
        assert inits(net) == {"HeUniform"}
        assert type(net.get_layer("logits").kernel_initializer).__name__ == "GlorotUniform"
    assert inits(models.build("vgg3", (32, 32, 3), 10)) == {"GlorotUniform"}


def test_vgg9_local_form_and_thinned_global():
    """KLW's VGG9 locals: four poolings, one hidden dense layer of 128 / width_divisor; the thinned
    global net (Gu et al.'s sub-networks) keeps the global layers. Counts by hand."""

    def convs(c_in, widths):
        total = 0
        for w in widths:
            total += 9 * c_in * w + w
            c_in = w
        return total

    half = [16, 16, 32, 32, 64, 64, 128, 128, 256, 256]
    local = models.build("vgg9", (16, 16, 3), 10, width_divisor=2)
    assert local.count_params() == convs(3, half) + (256 * 64 + 64) + (64 * 10 + 10)  # 1x1x256 after 4 pools
    assert [layer.name for layer in layer_types(local, keras.layers.Dense)] == ["dense1", "logits"]
    assert len(layer_types(local, keras.layers.MaxPooling2D)) == 4 and not local.adaptations
    thin = models.build("vgg9", (16, 16, 3), 10, width_divisor=2, klw_local=False)
    assert [layer.name for layer in layer_types(thin, keras.layers.Dense)] == ["dense1", "dense2", "logits"]
    assert thin.count_params() == convs(3, half) + (256 * 64 + 64) + (64 * 32 + 32) + (32 * 10 + 10)
    assert thin.adaptations == ["pool5: skipped (input (1, 1))"]
    glob = models.build("vgg9", (32, 32, 3), 10)  # width_divisor 1: klw_local changes nothing
    assert glob.count_params() == models.build("vgg9", (32, 32, 3), 10, klw_local=False).count_params()
    assert models.build("vgg3", (16, 16, 3), 10, 2, klw_local=False).count_params() == 89_178  # same form


# Package-own regression pins (ResNet20 with projection shortcuts is not a Table 2 network;
# KLW's counts are reproduced by resnet20a, below): 1x1 projections with bias, no BN on them.
def resnet20_trainable(channels: int, k: int, wd: int) -> int:
    """ResNet20 with 1x1 projection shortcuts, counted by hand: convs keep their bias, BN trains 2 per channel."""

    def conv(size, c_in, c_out):
        return size * size * c_in * c_out + c_out

    w1, w2, w3 = 16 // wd, 32 // wd, 64 // wd
    n = conv(3, channels, w1) + 2 * w1  # stem
    n += 6 * (conv(3, w1, w1) + 2 * w1)  # stage 1: three blocks, identity shortcuts
    for before, w in ((w1, w2), (w2, w3)):  # stages 2, 3: the first block halves the size, projects
        n += conv(3, before, w) + conv(1, before, w) + 5 * conv(3, w, w) + 6 * 2 * w
    return n + w3 * k + k  # logits


@pytest.mark.parametrize("shape,wd,count", [((32, 32, 3), 1, 273_066), ((16, 16, 3), 2, 69_082)])
def test_resnet20_trainable_counts(shape, wd, count):
    """The package's projection ResNet20 (not KLW Table 2's, which resnet20a matches): a hand count."""
    assert resnet20_trainable(shape[-1], 10, wd) == count
    net = models.build("resnet20", shape, 10, width_divisor=wd)
    assert trainable(net) == count
    assert net.count_params() > count  # BN moving statistics are not trainable


@pytest.mark.parametrize("model", models.MODELS)
@pytest.mark.parametrize("shape", [(16, 16, 3), (8, 8, 8, 1)])
def test_2d_and_3d_forward_shapes(model, shape):
    net = models.build(model, shape, 5, width_divisor=8)
    x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    probs = np.asarray(net(x, training=False))
    assert probs.shape == (2, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    conv_cls = keras.layers.Conv2D if len(shape) == 3 else keras.layers.Conv3D
    assert layer_types(net, conv_cls)


def test_probs_is_the_activation_of_logits():
    net = models.build("vgg3", (16, 16, 3), 4, width_divisor=4)
    assert isinstance(net.get_layer("logits"), keras.layers.Dense)
    assert isinstance(net.get_layer("probs"), keras.layers.Activation)
    logits = keras.Model(net.input, net.get_layer("logits").output)
    x = np.random.default_rng(1).random((3, 16, 16, 3), dtype=np.float32)
    z = np.asarray(logits(x))
    expected = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(net(x)), expected, rtol=1e-5, atol=1e-6)


def test_binary_problem_has_one_sigmoid_unit_and_two_probability_columns():
    net = models.build("vgg3", (16, 16, 1), 2, width_divisor=4)
    assert net.output_shape == (None, 1)
    assert net.get_layer("probs").get_config()["activation"] == "sigmoid"
    p = np.asarray(net(np.random.default_rng(2).random((4, 16, 16, 1), dtype=np.float32)))
    probs = models.to_probabilities(p)
    assert probs.shape == (4, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs[:, 1], p[:, 0])
    assert models.output_units(2) == 1 and models.output_units(7) == 7
    assert models.loss_for(2) == "binary_crossentropy"
    assert models.loss_for(10) == "sparse_categorical_crossentropy"


def test_to_probabilities_keeps_multiclass_rows():
    p = np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    np.testing.assert_array_equal(models.to_probabilities(p), p)


@pytest.mark.parametrize(
    "model,layer,attr,full",
    [
        ("vgg3", "conv1_1", "filters", 32),
        ("vgg3", "dense1", "units", 128),
        ("vgg9", "conv5_2", "filters", 512),
        ("resnet20", "stem_conv", "filters", 16),
        ("resnet20", "s3b3_conv2", "filters", 64),
        ("cnn3d", "conv4", "filters", 256),
        ("cnn3d", "dense1", "units", 512),
    ],
)
def test_width_divisor_halves_widths_not_outputs(model, layer, attr, full):
    shape = (32, 32, 32, 1) if model == "cnn3d" else (32, 32, 3)
    glob = models.build(model, shape, 10)
    local = models.build(model, shape, 10, width_divisor=2)
    assert getattr(glob.get_layer(layer), attr) == full
    assert getattr(local.get_layer(layer), attr) == full // 2
    assert local.get_layer("logits").units == glob.get_layer("logits").units == 10


def test_dropout_default_and_override():
    def rates(net):
        return {layer.rate for layer in layer_types(net, keras.layers.Dropout)}

    assert rates(models.build("vgg3", (16, 16, 3), 10)) == {0.2}
    assert rates(models.build("vgg3", (16, 16, 3), 10, dropout=0.5)) == {0.5}
    assert rates(models.build("cnn3d", (16, 16, 16, 1), 2)) == {0.3}
    assert rates(models.build("cnn3d", (16, 16, 16, 1), 2, dropout=0.1)) == {0.1}
    assert rates(models.build("resnet20", (16, 16, 3), 10)) == set()


def test_cnn3d_adapts_to_small_boxes_and_says_so():
    glob = models.build("cnn3d", (128, 128, 64, 1), 2)
    assert list(glob.adaptations) == [] and glob.name == "cnn3d"
    local = models.build("cnn3d", (32, 32, 32, 1), 2, width_divisor=2)  # 4x4x2 of 128x128x64
    assert local.name == "cnn3d_adapted"
    assert any("conv4" in note and "same" in note for note in local.adaptations)
    assert local.count_params() == models.build("cnn3d", (64, 64, 64, 1), 2, 2).count_params()
    x = np.random.default_rng(3).random((1, 32, 32, 32, 1), dtype=np.float32)
    p = np.asarray(local(x, training=False))
    assert p.shape == (1, 1) and 0.0 < p[0, 0] < 1.0
    tiny = models.build("cnn3d", (8, 8, 8, 1), 2, width_divisor=8)
    assert any("skipped" in note for note in tiny.adaptations)
    assert np.asarray(tiny(np.zeros((1, 8, 8, 8, 1), np.float32))).shape == (1, 1)


def test_custom_name():
    assert models.build("vgg3", (16, 16, 3), 10, 2, name="local_03").name == "local_03"


@pytest.mark.parametrize(
    "kwargs,param",
    [
        ({"model": "vgg16"}, "model"),
        ({"num_classes": 1}, "num_classes"),
        ({"input_shape": (32, 3)}, "input_shape"),
        ({"width_divisor": 0}, "width_divisor"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_bad_input_raises_input_error(kwargs, param):
    args = {"model": "vgg3", "input_shape": (16, 16, 3), "num_classes": 10} | kwargs
    with pytest.raises(InputError) as err:
        models.build(**args)
    assert err.value.param == param


def test_coarse_net_counts_and_io():
    net = models.build_coarse(4, 10)
    assert net.input_shape == (None, 40) and net.output_shape == (None, 10)
    assert net.count_params() == 40 * 128 + 128 + 128 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10
    assert net.get_layer("probs").get_config()["activation"] == "softmax"
    binary = models.build_coarse(9, 2, hidden=(64, 32, 16), dropout=0.4)
    assert binary.input_shape == (None, 9) and binary.output_shape == (None, 1)
    assert binary.get_layer("probs").get_config()["activation"] == "sigmoid"
    assert [d.rate for d in layer_types(binary, keras.layers.Dropout)] == [0.4] * 3
    assert not layer_types(net, keras.layers.Dropout)
    with pytest.raises(InputError):
        models.build_coarse(0, 10)


@pytest.mark.parametrize(
    "shape,k,wd,params,mflops",
    [
        ((32, 32, 3), 10, 1, 271_786, 0.8110),
        ((16, 16, 3), 10, 2, 69_082, 0.0513),
        ((180, 180, 3), 5, 1, 271_461, 25.6608),
        ((60, 60, 3), 5, 2, 68_917, 0.7206),
    ],
)
def test_resnet20a_reproduces_klw_table2_exactly(shape, k, wd, params, mflops):
    from ddmlflow import profiling

    net = models.build("resnet20a", shape, k, width_divisor=wd)
    assert net.count_params() == params  # Table 2: 0.2718M, 0.0691M, 0.2715M, 0.0689M
    assert profiling.paper_mflops(profiling.flops(net)) == mflops
    assert not [w for w in net.weights if "_proj" in w.path]  # parameter-free shortcuts


def test_resnet20a_saves_and_loads_safely(tmp_path):
    import keras

    net = models.build("resnet20a", (8, 8, 3), 3, width_divisor=2)
    net.save(tmp_path / "r.keras")
    again = keras.saving.load_model(tmp_path / "r.keras", safe_mode=True)
    x = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    assert np.allclose(net.predict(x, verbose=0), again.predict(x, verbose=0))


@pytest.mark.parametrize(
    "model,shape,k,n,batch",
    [
        ("vgg3", (16, 16, 3), 6, 70, 32),  # the last batch is short (70 = 2 x 32 + 6)
        ("vgg3", (16, 16, 3), 2, 5, 256),  # one sigmoid unit, fewer images than a batch
        ("cnn3d", (16, 16, 8, 1), 3, 9, 4),
    ],
)
def test_fast_predict_equals_keras_predict(model, shape, k, n, batch):
    """``inference.predict`` (what the pyfunc and every step's probabilities use) is ``model.predict``
    without the pipeline: the same outputs, one traced function per model that does not keep it alive."""
    import gc
    import weakref

    from ddmlflow.inference import _PREDICT, predict, predict_probs

    net = models.build(model, shape, k, width_divisor=2)
    x = np.random.default_rng(0).random((n, *shape), dtype=np.float32)
    want = net.predict(x, batch_size=batch, verbose=0)
    got = predict(net, x, batch)
    assert got.shape == want.shape == (n, models.output_units(k))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        predict_probs(net, x.astype("float64"), batch), models.to_probabilities(want), rtol=1e-5, atol=1e-6
    )  # float64 input is cast, as Keras does
    assert net in _PREDICT and len(predict(net, x[:0], batch)) == 0
    ref = weakref.ref(net)
    del net
    gc.collect()
    assert ref() is None, "the cache of traced functions keeps the model alive"
