"""The `ddmlflow` command's read-only subcommands: profile (KLW Table 2) and presets."""
from __future__ import annotations

import json

from ddmlflow.cli import main


def test_profile_prints_the_table2_row(capsys):
    assert main(["profile", "--preset", "cifar10-vgg3-2x2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert (rows["global"]["params"], rows["local"]["params"]) == (550570, 89178)
    assert (rows["global"]["paper_mflops"], rows["local"]["paper_mflops"]) == (0.7779, 0.0497)
    assert rows["global"]["flops"] == 77_794_378 and rows["local"]["tteval_ms"] > 0


def test_presets_list_and_show(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) >= 30 and any(line.startswith("flowers-vgg9-typeB") for line in lines)
    assert main(["presets", "ct-3d-4x4x2"]) == 0
    shown = capsys.readouterr().out
    assert "decomposition: 4x4x2" in shown and "learning_rate: 0.0001" in shown
    assert main(["presets", "nope"]) == 2
    assert "preset" in capsys.readouterr().err
