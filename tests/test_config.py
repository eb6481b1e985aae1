"""Presets resolve into one typed config; explicit parameters override; strings compare as strings."""
from __future__ import annotations

import pytest

from ddmlflow.config import parse_count, parse_strategies, resolve
from ddmlflow.errors import InputError


def test_default_is_the_offline_preset():
    cfg = resolve()
    assert (cfg.preset, cfg.dataset, cfg.model, cfg.decomposition) == ("shapes2d-vgg3-2x2", "shapes2d", "vgg3", "2x2")


def test_dataset_picks_its_own_preset_and_overrides_win():
    cfg = resolve("", dataset="shapes3d", epochs="3", coarse_hidden="16, 8")
    assert (cfg.preset, cfg.model, cfg.decomposition) == ("shapes3d-cnn3d-2x2x1", "cnn3d", "2x2x1")
    assert cfg.epochs == 3 and cfg.coarse_hidden == (16, 8)


def test_paper_preset_values():
    cfg = resolve("ct-3d-4x4x2")
    assert (cfg.learning_rate, cfg.batch_size, cfg.patience, cfg.coarse_dropout) == (1e-4, 2, 15, 0.4)


def test_params_are_strings_and_stable():
    a, b = resolve("", epochs=2).params(), resolve("", epochs="2").params()
    assert a == b and all(isinstance(v, str) for v in a.values()) and a["epochs"] == "2"


def test_counts_and_strategies():
    assert parse_count("max_parallel", "2.0") == 2
    with pytest.raises(InputError, match="max_parallel"):
        parse_count("max_parallel", "1.5")
    assert parse_strategies("cnn_dnn, compose") == ("cnn_dnn", "compose")


def test_unknown_parameter_is_named():
    with pytest.raises(InputError, match="colour"):
        resolve("", colour="red")
