from collections import Counter

import pytest

from ddmlflow import presets
from ddmlflow.decomposition import make
from ddmlflow.errors import InputError

DATASETS = {"shapes2d", "shapes3d", "cifar10", "tf_flowers", "yale_b", "mosmed"}
ALL = list(presets.PRESETS.values())


@pytest.mark.parametrize("p", ALL, ids=lambda p: p.name)
def test_fields_are_valid(p):
    from ddmlflow.models import MODELS

    assert p.dataset in DATASETS and p.model in MODELS
    assert (p.model == "cnn3d") == (len(p.image_shape) == 4)
    assert p.num_classes > 1 and p.width_divisor >= 1 and p.overlap >= 0
    assert p.optimizer == "adam" and 0 < p.learning_rate <= 1e-3 and 0 < p.coarse_learning_rate <= 1e-3
    assert p.batch_size >= 1 and p.coarse_batch_size >= 1 and p.epochs >= 1 and p.coarse_epochs >= 1
    assert p.patience >= 0 and 0 <= p.coarse_dropout < 1 and all(h > 0 for h in p.coarse_hidden)
    assert p.transfer_pretrain_epochs >= 1 and isinstance(p.transfer_coarse, bool)
    assert p.compose_lr_schedule in presets.COMPOSE_LR_SCHEDULES
    assert make(p.decomposition, p.image_shape, p.overlap).n >= 4
    assert p.description and p.paper
    params = p.params()
    assert params["preset"] == p.name and "description" not in params
    assert all(isinstance(v, (str, int, float)) for v in params.values())


def test_every_klw_table_row_has_one_preset():
    rows = Counter(p.paper.split(" row ")[0] for p in ALL if p.paper.startswith("KLW Table"))
    assert rows == {
        "KLW Table 3": 3,
        "KLW Table 4": 3,
        "KLW Table 5": 3,
        "KLW Table 6": 4,
        "KLW Table 7": 4,
        "KLW Table 8": 4,
        "KLW Table 9": 2,
        "KLW Table 10": 5,
    }
    tl = {p.name for p in ALL if "KLW-TL" in p.paper}
    assert tl == {
        "cifar10-vgg9-2x2",
        "cifar10-resnet20-2x2",
        "flowers-vgg9-2x2",
        "flowers-vgg9-4x4",
        "flowers-resnet20-2x2",
        "flowers-resnet20-4x4",
        "ct-3d-2x2x1",
        "ct-3d-4x4x2",
    }
    assert len(ALL) == 28 + 2


def test_names_unique_and_readable():
    assert len({p.name for p in ALL}) == len(ALL) == len(presets.PRESETS)
    assert all(presets.PRESETS[p.name] is p for p in ALL)
    for name in (
        "cifar10-vgg3-2x2-d4",
        "flowers-vgg9-typeB",
        "ct-3d-4x4x2",
        "yale-vgg3-4x4",
        "ct-3d-4x4x1-d4",
        presets.DEFAULT,
        "shapes3d-cnn3d-2x2x1",
    ):
        assert presets.get(name).name == name
    assert presets.get("cifar10-vgg3-2x2-d4").overlap == 4


def test_paper_hyperparameters():
    ct = presets.get("ct-3d-2x2x1")
    assert (ct.image_shape, ct.num_classes, ct.learning_rate, ct.batch_size, ct.patience) == (
        (128, 128, 64, 1),
        2,
        1e-4,
        2,
        15,
    )
    assert (ct.coarse_hidden, ct.coarse_dropout, ct.coarse_learning_rate) == ((64, 32, 16), 0.4, 1e-3)
    yale = presets.get("yale-vgg3-3x3")
    assert (yale.image_shape, yale.num_classes, yale.batch_size, yale.coarse_dropout) == ((192, 168, 1), 38, 16, 0.2)
    flowers = presets.get("flowers-resnet20-typeB")
    assert (flowers.image_shape, flowers.num_classes, flowers.epochs, flowers.patience) == ((180, 180, 3), 5, 500, 0)


def test_default_preset_pin():
    """A pin of the package's own choice, not a paper value: the offline default of the README quick start."""
    default = presets.get(presets.DEFAULT)
    assert (default.dataset, default.model, default.decomposition, default.epochs) == ("shapes2d", "vgg3", "2x2", 8)
    assert "KLW" not in default.paper  # it claims no paper row


def test_klw_tl_transfer_and_gc_fields():
    for p in ALL:
        paper = p.dataset not in ("shapes2d", "shapes3d")
        # KLW-TL 2.2: locals pre-trained 150 epochs, their parameters (only) transferred
        assert (p.transfer_pretrain_epochs, p.transfer_coarse) == ((150, False) if paper else (p.epochs, True))
        assert p.compose_lr_schedule == "step" and "not modelled: GC's flip/shift augmentation" in p.description
    assert "8,217,637" in presets.get("flowers-vgg3-3x3").description
    assert "8,548,998" in presets.get("yale-vgg3-4x4").description


def test_listing_describe_and_unknown():
    lines = presets.listing()
    assert len(lines) == len(ALL)
    assert [line.split()[0] for line in lines] == list(presets.PRESETS)
    text = presets.describe("flowers-vgg9-typeB")
    assert text.startswith("flowers-vgg9-typeB: ") and "KLW Table 7 row 4" in text
    assert "batch_size: 32" in text and "image_shape: 180x180x3" in text
    with pytest.raises(InputError, match="preset='nope': one of cifar10-vgg3-2x2, "):
        presets.get("nope")
    with pytest.raises(InputError):
        presets.describe("nope")


def test_run_config_defaults_exist(tmp_path):
    from ddmlflow import config

    for dataset, name in config.DEFAULT_PRESET.items():
        p = presets.get(name)
        assert p.dataset == (dataset if dataset != "folder" else "shapes2d"), (dataset, name)
        folder = {"data_dir": str(tmp_path)} if dataset == "folder" else {}
        assert config.resolve("", dataset=dataset, **folder).preset == name
    for p in ALL:
        assert config.resolve(p.name).decomposition == p.decomposition


@pytest.mark.parametrize("p", ALL, ids=lambda p: p.name)
def test_smoke_build(p):
    from ddmlflow import models

    boxes = make(p.decomposition, p.image_shape, p.overlap)
    units = models.output_units(p.num_classes)
    for i in {0, boxes.n - 1}:  # first and last box (they differ for 3x3x1 and overlaps)
        local = models.build(p.model, boxes.input_shape(i), p.num_classes, width_divisor=p.width_divisor)
        assert local.output_shape == (None, units)
    if p.dataset == "cifar10":
        assert models.build(p.model, p.image_shape, p.num_classes).output_shape == (None, units)
    coarse = models.build_coarse(boxes.n, p.num_classes, hidden=p.coarse_hidden, dropout=p.coarse_dropout)
    assert coarse.output_shape == (None, units)
