"""Presets resolve into one typed config; explicit parameters override; strings compare as strings."""

from __future__ import annotations

import pytest

from ddmlflow.config import FullOptions, RunConfig, integer, options, parse_options, resolve
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
    assert integer(1)("max_parallel", "2.0") == 2
    with pytest.raises(InputError, match="max_parallel"):
        integer(1)("max_parallel", "1.5")
    opts = parse_options(FullOptions, strategies="cnn_dnn, compose", gpus="none", max_parallel="2.0")
    assert opts.strategies == ("cnn_dnn", "compose") and opts.gpus == () and opts.max_parallel == 2
    assert opts.run_global is True and opts.executor == "auto"
    with pytest.raises(InputError, match="strategies"):
        parse_options(FullOptions, strategies="cnn_dnn,magic")


def test_a_child_process_gets_the_drivers_config_through_the_worker_not_the_cli():
    """Every executor's child runs through the one worker entry point (``executors/worker.py --job``), so the
    CLI has no hidden config option: a step subcommand resolves what a user types, nothing else."""
    from ddmlflow.cli import build_parser

    with pytest.raises(InputError, match="config_json='{}': not a parameter of train-local"):
        build_parser().parse_args(
            ["train-local", "--run-id", "r1", "--decompose-run", "x", "--box", "1", "--config-json", "{}"]
        )
    assert "config-json" not in build_parser().format_help()


def test_every_option_has_help_and_a_parser():
    for cls in (RunConfig, FullOptions):
        for o in options(cls):
            assert o["help"] and callable(o["parse"]), o["param"]


@pytest.mark.parametrize(
    "spelling",
    [
        "2x2",
        "2X2",
        "typeB",
        "type-B",
        "TYPE_B",
        "b",
        "B",
        "[[0,0,20,20],[12,12,32,32],[0,12,20,32],[12,0,32,20]]",
        '{"boxes": [[0,0,32,20],[0,12,32,32]]}',
        "4x4x2",
    ],
)
def test_every_decomposition_spelling_passes_the_config_check(spelling):
    assert resolve("", decomposition=spelling).decomposition == spelling


@pytest.mark.parametrize("bad", ["2by2", "0x0", "1x1", "[[0,0,20]]", "[]", '{"boxes": 3}', "missing.json", "typeC"])
def test_malformed_decompositions_name_the_accepted_forms(bad):
    with pytest.raises(InputError, match="decomposition") as e:
        resolve("", decomposition=bad)
    assert "\n" not in str(e.value)


def test_unknown_parameter_is_named():
    with pytest.raises(InputError, match="colour"):
        resolve("", colour="red")


def test_a_config_crosses_into_a_worker_typed_and_refuses_another_schema():
    """``to_json`` / ``from_json``: the packed, Ray and tuner workers get the driver's typed config back as it
    was (tuples included), and a config written under another schema version is refused, not misread."""
    import json

    from ddmlflow.config import FullOptions, from_json, parse_options, resolve, to_json

    cfg = resolve("", image_size="16,16", n_train="100", coarse_hidden="32,16", decomposition="3x3", dropout="")
    assert from_json(to_json(cfg)) == cfg and from_json(to_json(cfg)).image_size == (16, 16)
    opts = parse_options(FullOptions, gpus="0,1", executor="packed")
    assert from_json(to_json(opts)) == opts
    old = json.loads(to_json(cfg))
    old["schema"] -= 1
    with pytest.raises(InputError, match="schema"):
        from_json(json.dumps(old))
