"""What the steps return: typed results the command that ran them uses directly.

A step run in this process hands its result to the command; a reused step's
result is read back from its run (``from_run``), the one place that knows where
each piece is stored. Light on purpose (MLflow, no TensorFlow): a command whose
steps are all reused reads them without loading TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mlflow

from .tags import NUM_CLASSES_TAG
from .tracking import get_run


@dataclass(frozen=True)
class Decomposed:
    """What ``decompose`` produced, for the steps after it."""

    run_id: str
    n_boxes: int
    image_shape: tuple[int, ...]
    num_classes: int

    @classmethod
    def from_run(cls, run_id: str) -> Decomposed:
        """The same, from the run of an earlier command (a reused step): the one place that knows how
        ``decompose`` stores it."""
        d = get_run(run_id).data
        return cls(
            run_id,
            int(d.params["n_boxes"]),
            tuple(int(s) for s in d.params["image_shape"].split("x")),
            int(d.tags[NUM_CLASSES_TAG]),
        )


@dataclass
class Evaluation:
    """What ``evaluate`` produced: the accuracies (``val_accuracy/<method>``, ...), the results table,
    the per-class recall table, and the registered version, if any."""

    run_id: str
    results: dict[str, float]
    table: str
    per_class: str | None = None
    registered: dict[str, Any] = field(default_factory=dict)  # serving.register's answer

    @classmethod
    def from_run(cls, run_id: str) -> Evaluation:
        """The same, from the run of an earlier command (a reused step); ``per_class`` is None for a run
        older than the classifier evaluation."""

        def text(name: str) -> str | None:
            try:
                return mlflow.artifacts.load_text(f"runs:/{run_id}/{name}")
            except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
                return None

        results = get_run(run_id).data.metrics
        return cls(run_id, dict(results), text("results.md") or "", text("per_class.md"))
