"""Cheap alternatives to the coarse net (KLW-TL sec. 2.1): average probability, majority vote.

Both take the local class probabilities stacked as ``probs[i, j, k]`` = probability
that local net ``i`` gives class ``k`` to image ``j`` (shape ``(N, n, K)``) and are
vectorized over the images, so evaluating a whole validation set is one numpy call.

Majority-vote ties. KLW-TL: "we additionally consider the probability values for the
respective classes and choose the class among the majority candidates with the highest
assigned probability value". We read "assigned probability value" as the probability
with which a vote was cast: a tied class scores the largest ``probs[i, j, k]`` over the
locals ``i`` that voted for ``k`` (``tie_break="max"``, the default). The other reading,
the tied class with the highest average probability over all locals, is
``tie_break="mean"``. A tie that survives either rule goes to the lowest class index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import require

TIE_BREAKS = ("max", "mean")


def _stack(probs: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """(N, n, K) float array; a single sigmoid column (K = 1) becomes [1 - p, p]."""
    p = np.asarray(probs, dtype="float64")
    require(
        p.ndim == 3 and p.shape[0] >= 1, "probs", getattr(p, "shape", None), "an array of shape (N_locals, n_images, K)"
    )
    if p.shape[2] == 1:
        p = np.concatenate([1.0 - p, p], axis=2)
    return p


def average_probability(probs: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """(n, K) mean of the local class probabilities; its argmax is the "avg. prob." label."""
    return _stack(probs).mean(axis=0)


def majority_vote(probs: np.ndarray | Sequence[np.ndarray], tie_break: str = "max") -> np.ndarray:
    """(n,) int labels: the class most locals vote for (their argmax), ties broken by probability."""
    require(tie_break in TIE_BREAKS, "tie_break", tie_break, f"one of {', '.join(TIE_BREAKS)}")
    p = _stack(probs)
    k = p.shape[2]
    voted = np.eye(k, dtype=bool)[p.argmax(axis=2)]  # (N, n, K): local i voted class k
    counts = voted.sum(axis=0)  # (n, K)
    candidates = counts == counts.max(axis=1, keepdims=True)
    if tie_break == "max":
        score = np.where(voted, p, -np.inf).max(axis=0)  # strongest vote cast for each class
    else:
        score = p.mean(axis=0)
    return np.where(candidates, score, -np.inf).argmax(axis=1)


@dataclass(frozen=True)
class Rule:
    """One aggregation of the local probabilities (N, n, K), as ``evaluate`` compares it with the coarse net."""

    fn: Callable[[np.ndarray | Sequence[np.ndarray]], np.ndarray]
    label: str  # its name in the tables and the report (the papers' wording)
    probabilities: bool  # ``fn`` returns (n, K) probabilities; else (n,) labels

    def labels(self, probs) -> np.ndarray:
        out = self.fn(probs)
        return out.argmax(axis=1) if self.probabilities else out


# Every aggregation rule, in the tables' order. A new rule: its function above and one line here.
RULES: dict[str, Rule] = {
    "avg_prob": Rule(average_probability, "avg. prob.", probabilities=True),
    "majority_vote": Rule(majority_vote, "maj. vote", probabilities=False),
}
