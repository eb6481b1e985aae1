"""What a run is, in words the MLflow UI shows: run names, tags to group by, descriptions.

The runs table should tell two decompositions apart at a glance, so the parent
run is named after its configuration and every run carries the same small tag
set (``ddmlflow.preset``, ``ddmlflow.decomposition``, ...). Descriptions
(``mlflow.note.content``, Markdown in the UI) say what each run trained on and,
for the parent, what came out of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .paper_values import lookup
from .tags import DATASET_TAG, DECOMPOSITION_TAG, MODEL_TAG, OVERLAP_TAG, PRESET_TAG


def short_spec(cfg) -> str:
    """The decomposition as a name part: ``2x2``, ``typeB``, or ``custom`` for JSON boxes."""
    spec = str(cfg.decomposition)
    return spec if re.fullmatch(r"[\w.-]{1,24}", spec) else "custom"


def parent_name(cfg) -> str:
    """``shapes2d-vgg3-2x2-d2``: data set, network, decomposition, overlap (delta)."""
    return f"{cfg.dataset}-{cfg.model}-{short_spec(cfg)}-d{cfg.overlap}"


def experiment_name(cfg) -> str:
    return f"ddmlflow-{cfg.dataset}"


def cfg_tags(cfg) -> dict[str, str]:
    """Tags every run of one configuration shares (the UI groups and filters by tags)."""
    return {
        PRESET_TAG: cfg.preset,
        DATASET_TAG: cfg.dataset,
        MODEL_TAG: cfg.model,
        DECOMPOSITION_TAG: short_spec(cfg),
        OVERLAP_TAG: str(cfg.overlap),
    }


def paper_row(cfg) -> str | None:
    """The papers' published values for this configuration (``ddmlflow.paper_values``) as Markdown, or None."""
    found = [e for e in lookup(cfg.dataset, cfg.model, cfg.decomposition, cfg.overlap) if e.paper != "GC"]
    if not found:
        return None
    lines = ["| source | column | published |", "|---|---|---|"]
    for e in found:
        value = f"{e.value:.4f}" + (f" ({e.train:.4f})" if e.train is not None else "")
        lines.append(
            f"| {e.paper} {'Table ' + e.table if not e.table.startswith('Fig') else e.table}, "
            f"{e.row} | {e.column} | {value} |"
        )
    return "\n".join(lines)


def parent_note(
    cfg,
    table: str,
    paper: str | None,
    reused: dict[str, tuple[str, str]],
    adopted: list[str],
    per_class: str | None = None,
) -> str:
    """The parent's description: the results table, per-class recall, the paper's row, where reused runs live."""
    lines = [
        (
            f"**{parent_name(cfg)}**: preset `{cfg.preset}`, data set `{cfg.dataset}`, network `{cfg.model}`, "
            f"decomposition `{cfg.decomposition}`, overlap {cfg.overlap}, width divisor {cfg.width_divisor}, "
            f"{cfg.epochs} epochs (coarse net {cfg.coarse_epochs}), seed {cfg.seed}."
        ),
        "",
        table.strip(),
    ]
    if per_class:
        lines += ["", "Which classes the coarse net gets right where averaging does not:", "", per_class.strip()]
    if paper:
        lines += ["", "The paper's values for this configuration:", "", paper.strip()]
    if reused:
        lines += ["", "Reused finished runs (they stay under the parent that made them):", ""]
        lines += [f"- `{name}`: run `{rid}` (parent `{parent}`)" for name, (rid, parent) in sorted(reused.items())]
    if adopted:
        lines += ["", f"Adopted from an unfinished earlier parent: {', '.join(f'`{n}`' for n in sorted(adopted))}."]
    return "\n".join(lines) + "\n"


def bounds(box_bounds: str) -> str:
    """``Box(start=(0, 14), stop=(18, 32))`` -> ``0:18,14:32``."""
    nums = re.findall(r"\d+", box_bounds)
    half = len(nums) // 2
    return ",".join(f"{a}:{b}" for a, b in zip(nums[:half], nums[half:]))


def decompose_note(cfg, image_shape, n_boxes: int, n_train: int, n_val: int, num_classes: int) -> str:
    """What the ``decompose`` run did: data set, image shape, decomposition, number of boxes."""
    shape = "x".join(map(str, image_shape))
    return (
        f"Cut `{cfg.dataset}` ({n_train} training and {n_val} validation images of shape {shape}, "
        f"{num_classes} classes, seed {cfg.seed}) into the {n_boxes} boxes of decomposition "
        f"`{cfg.decomposition}` with overlap {cfg.overlap}.\n"
        "Artifacts: the prepared data (`data/`), `decomposition.json` and `boxes.png`; every training "
        "run of this tree reads them.\n"
    )


@dataclass(frozen=True)
class Role:
    """What a training run trains, passed by the step that trains it (never inferred from its parameters)."""

    kind: str  # global | local | coarse | strategy
    box: int | None = None  # local: its box index
    box_bounds: str = ""  # local: its box as logged, e.g. "(0, 0, 20, 20)"
    strategy: str = ""  # strategy: its name (coherent, transfer, compose)
    n_locals: int = 0  # coarse: how many local nets it reads

    @property
    def model_name(self) -> str:
        """The logged model's name: ``global``, ``local_03``, ``coarse`` or the strategy."""
        return f"local_{self.box:02d}" if self.kind == "local" else self.strategy or self.kind

    @property
    def what(self) -> str:
        if self.kind == "strategy":
            return f"the `{self.strategy}` strategy on whole images"
        if self.kind == "coarse":
            return f"the coarse net on the probabilities of {self.n_locals} local nets"
        if self.kind == "local":
            return f"the local CNN of box {self.box}, pixels {bounds(self.box_bounds)} (rows:cols[:depth])"
        return "the global CNN on whole images"


def training_note(role: Role, params: dict, device: str, n_train: int, n_val: int) -> str:
    """What one training run saw: its role, input shape, width divisor, device, sample counts."""
    what = role.what
    shape = params.get("input_shape", "")
    return (
        f"Trained {what}"
        + (f"; input shape {shape}" if shape else "")
        + (f", widths divided by {params['effective_width_divisor']}" if "effective_width_divisor" in params else "")
        + f"; {n_train} training and {n_val} validation samples of `{params.get('dataset', '?')}`"
        f" (seed {params.get('seed', '?')}); device {device}.\n"
    )


def model_note(name: str, cfg_params: dict, run_id: str, parent_id: str, val_accuracy: float) -> str:
    """The registered CNN-DNN's description (model and version)."""
    return (
        f"`{name}`: the composed CNN-DNN of Klawonn-Lanser-Weber (local CNNs on the boxes of "
        f"decomposition `{cfg_params.get('decomposition', '?')}` with overlap {cfg_params.get('overlap', '?')}, "
        f"then the dense coarse net), network `{cfg_params.get('model', '?')}`, data set "
        f"`{cfg_params.get('dataset', '?')}`. Takes whole images, returns `label` (the class name) and one "
        f"probability column per class. Produced by evaluate run `{run_id}` (parent `{parent_id}`); "
        f"validation accuracy {val_accuracy:.4f}.\n"
    )
