import keras
import numpy as np
import pytest
from keras import layers

from ddmlflow import profiling


def tiny_2d(use_bias: bool = True, head_name: str = "dense") -> keras.Model:
    inputs = keras.Input((6, 5, 2))
    x = layers.Conv2D(3, 3, use_bias=use_bias)(inputs)  # valid: (4, 3, 3)
    x = layers.MaxPooling2D((1, 1))(x)  # costs nothing
    x = layers.Flatten()(x)  # 36
    return keras.Model(inputs, layers.Dense(4, name=head_name)(x))


def tiny_3d() -> keras.Model:
    inputs = keras.Input((6, 5, 4, 2))
    x = layers.Conv3D(3, 3)(inputs)  # valid: (4, 3, 2, 3)
    x = layers.BatchNormalization()(x)
    return keras.Model(inputs, layers.Dense(4)(layers.Flatten()(x)))  # 72 -> 4


def test_flops_2d_by_hand():
    conv = 2 * (3 * 3 * 2 * 3) * (4 * 3) + 3  # 2 x MACs x positions + bias once per channel = 1299
    dense = 2 * 36 * 4 + 4  # 292
    assert profiling.flops(tiny_2d()) == conv + dense == 1591
    assert profiling.flops(tiny_2d(use_bias=False)) == 1591 - 3
    # exact: the bias is added at every output position, not once per channel
    assert profiling.flops_exact(tiny_2d()) == (conv - 3 + 3 * 4 * 3) + dense == 1624
    assert profiling.flops_exact(tiny_2d(use_bias=False)) == 1624 - 36


def test_flops_3d_by_hand():
    # model-profiler's 2D formula on the 5D shapes (None, 6, 5, 4, 2) -> (None, 4, 3, 2, 3):
    # positions = out[1] * out[2]; MACs = 3 * 3 * in[3] * out[3]; bias = out[3].
    quirk = 2 * (3 * 3 * 4 * 2) * (4 * 3) + 2  # 1730
    # really: 3x3x3 kernel x 2 in x 3 out channels at 4*3*2 positions, bias at each output element
    exact = 2 * (3 * 3 * 3 * 2 * 3) * (4 * 3 * 2) + 3 * (4 * 3 * 2)  # 7848
    dense = 2 * 72 * 4 + 4  # 580
    model = tiny_3d()
    assert profiling.flops(model) == quirk + dense == 2310
    assert profiling.flops_exact(model) == exact + dense == 8428


def test_layers_counted_by_type_not_name_and_inside_nested_models():
    assert profiling.flops(tiny_2d(head_name="logits")) == 1591  # model-profiler matches names; we do not
    inner = tiny_2d()
    outer = keras.Sequential([keras.Input((6, 5, 2)), inner, layers.Dense(2)])
    assert profiling.flops(outer) == 1591 + 2 * 4 * 2 + 2


def test_params():
    model = tiny_3d()
    conv, bn, dense = 3 * 3 * 3 * 2 * 3 + 3, 4 * 3, 72 * 4 + 4
    assert profiling.total_params(model) == conv + bn + dense == model.count_params()
    assert profiling.trainable_params(model) == conv + bn // 2 + dense  # BN moving stats excluded


def test_paper_mflops_unit_is_1e8():
    assert profiling.paper_mflops(77_794_378) == 0.7779
    assert profiling.paper_mflops(1_196_837_458) == 11.9684


# KLW Table 2, copied from the paper: (preset, net) -> (# params in M, "MFLOPs").
# The preset fixes the data set, the network and the decomposition of the row's block;
# "local" is the net of the first box at the preset's width divisor (2).
KLW_TABLE2 = {
    ("cifar10-vgg3-2x2", "global"): (0.5506, 0.7779),
    ("cifar10-vgg3-2x2", "local"): (0.0892, 0.0497),
    ("cifar10-vgg9-2x2", "global"): (4.7868, 1.3404),
    ("cifar10-vgg9-2x2", "local"): (1.1959, 0.0851),
    ("cifar10-resnet20-2x2", "global"): (0.2718, 0.8110),
    ("cifar10-resnet20-2x2", "local"): (0.0691, 0.0513),
    ("flowers-vgg3-3x3", "global"): (8.2178, 24.6064),
    ("flowers-vgg3-3x3", "local"): (0.2732, 0.6987),
    ("flowers-vgg9-3x3", "global"): (6.3593, 41.6092),
    ("flowers-vgg9-3x3", "local"): (1.3266, 1.0736),
    ("flowers-resnet20-3x3", "global"): (0.2715, 25.6608),
    ("flowers-resnet20-3x3", "local"): (0.0689, 0.7206),
    ("yale-vgg3-4x4", "global"): (8.5499, 24.1328),
    ("yale-vgg3-4x4", "local"): (0.1972, 0.3733),
    ("ct-3d-2x2x1", "global"): (1.3529, 11.9684),
    ("ct-3d-2x2x1", "local"): (0.3396, 0.8069),
}
# Entries the package does not reproduce, and why. Each is asserted to still differ, so a
# change that closes a gap fails here and the entry must move to the reproduced ones.
KNOWN_GAPS = {
    ("flowers-vgg3-3x3", "global", "params"): "8,217,637 (8.2176M): 113+ below; FLOPs match, no layer choice found",
    ("yale-vgg3-4x4", "global", "params"): "8,548,998 (8.5490M): 852+ below; FLOPs match, no layer choice found",
    ("ct-3d-2x2x1", "local", "mflops"): "model-profiler gives 2.8867 for the 64x64x64 box (params match); "
    "no natural box shape gives 0.8069",
}


def table2_net(preset: str, net: str):
    from ddmlflow import models, presets
    from ddmlflow.decomposition import make

    p = presets.get(preset)
    if net == "global":
        return models.build(p.model, p.image_shape, p.num_classes)
    box = make(p.decomposition, p.image_shape, p.overlap).input_shape(0)
    return models.build(p.model, box, p.num_classes, width_divisor=p.width_divisor)


@pytest.mark.parametrize("preset,net", list(KLW_TABLE2), ids=lambda v: str(v))
def test_klw_table2(preset, net):
    model = table2_net(preset, net)
    ours = {
        "params": round(profiling.total_params(model) / 1e6, 4),
        "mflops": profiling.paper_mflops(profiling.flops(model)),
    }
    paper = dict(zip(("params", "mflops"), KLW_TABLE2[preset, net]))
    for column in ("params", "mflops"):
        if (preset, net, column) in KNOWN_GAPS:
            assert ours[column] != paper[column], f"gap closed: {KNOWN_GAPS[preset, net, column]}"
        else:
            assert ours[column] == paper[column], column


def test_known_gaps_are_table2_entries():
    assert {(p, n) for p, n, _ in KNOWN_GAPS} <= set(KLW_TABLE2)
    reproduced = 2 * len(KLW_TABLE2) - len(KNOWN_GAPS)
    assert reproduced == 29  # of Table 2's 32 params/MFLOPs entries


def test_flops_exact_3d_counts_depth_and_channels():
    """The real cost of the CT nets (KLW Table 2 shapes) from a hand formula over their conv stacks."""
    model = table2_net("ct-3d-2x2x1", "global")  # 128x128x64x1, valid 3x3x3 convs, pool 2
    shape, c_in, expected = (128, 128, 64), 1, 0
    for c_out in (64, 64, 128, 256):
        shape = tuple(s - 2 for s in shape)
        positions = int(np.prod(shape))
        expected += positions * (2 * 27 * c_in * c_out + c_out)
        shape, c_in = tuple(s // 2 for s in shape), c_out
    expected += (2 * 256 * 512 + 512) + (2 * 512 * 1 + 1)  # dense 512, one sigmoid logit
    assert profiling.flops_exact(model) == expected
    assert profiling.flops_exact(model) > 25 * profiling.flops(model)  # model-profiler undercounts 3D


def test_tteval_and_profile_keys():
    model = tiny_3d()
    x = np.zeros((2, 6, 5, 4, 2), "float32")
    assert profiling.tteval_ms(model, x, repeats=2) > 0
    prof = profiling.profile(model, batch_size=2, repeats=2)
    assert set(prof) == {"params", "trainable_params", "flops", "flops_exact", "paper_mflops", "tteval_ms"}
    assert (prof["params"], prof["trainable_params"], prof["flops"], prof["flops_exact"]) == (469, 463, 2310, 8428)
    assert prof["paper_mflops"] == 0.0 and prof["tteval_ms"] > 0


def test_profile_preset_global_and_first_local():
    rows = profiling.profile_preset("shapes2d-vgg3-2x2", repeats=1)
    assert set(rows) == {"global", "local"}
    g, loc = rows["global"], rows["local"]
    # a 16x16 box (1/4 of the positions) and half widths (1/4 of the channel pairs): ~16x fewer FLOPs
    assert 10 < g["flops"] / loc["flops"] < 20
    assert loc["params"] < g["params"]
