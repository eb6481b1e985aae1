import numpy as np
import pytest

from ddmlflow.aggregate import average_probability, majority_vote
from ddmlflow.errors import InputError

# One image, four locals, K = 3: two votes for class 0, two for class 1.
# Strongest vote: class 0 (0.90 > 0.80). Highest mean: class 1 (0.475 > 0.375).
TIE = np.array([[[0.90, 0.10, 0.00]], [[0.50, 0.45, 0.05]], [[0.05, 0.55, 0.40]], [[0.05, 0.80, 0.15]]])

# Class 2 has the highest mean probability but only one vote: not a majority candidate.
NO_TIE = np.array([[[0.40, 0.25, 0.35]], [[0.40, 0.25, 0.35]], [[0.00, 0.10, 0.90]]])


def reference_vote(p: np.ndarray, tie_break: str) -> int:
    """Loop version for one image, p: (N, K)."""
    votes = p.argmax(1)
    counts = np.bincount(votes, minlength=p.shape[1])
    best = [k for k in range(p.shape[1]) if counts[k] == counts.max()]
    if tie_break == "max":
        score = {k: max(p[i, k] for i in range(len(p)) if votes[i] == k) for k in best}
    else:
        score = {k: p[:, k].mean() for k in best}
    return max(best, key=lambda k: (score[k], -k))


def test_tie_readings_differ():
    assert majority_vote(TIE).tolist() == [0]
    assert majority_vote(TIE, tie_break="max").tolist() == [0]
    assert majority_vote(TIE, tie_break="mean").tolist() == [1]
    assert average_probability(TIE).argmax(1).tolist() == [1]
    np.testing.assert_allclose(average_probability(TIE)[0], [0.375, 0.475, 0.15])


def test_majority_beats_probability_without_tie():
    for rule in ("max", "mean"):
        assert majority_vote(NO_TIE, tie_break=rule).tolist() == [0]
    assert average_probability(NO_TIE).argmax(1).tolist() == [2]


def test_exact_tie_goes_to_lowest_class():
    p = np.array([[[0.6, 0.4]], [[0.4, 0.6]]])
    assert majority_vote(p).tolist() == [0]
    assert majority_vote(p, tie_break="mean").tolist() == [0]


def test_vectorized_matches_loop_and_shapes():
    rng = np.random.default_rng(0)
    for n_locals, k in [(4, 3), (9, 5), (2, 2), (16, 10), (1, 4)]:
        logits = rng.normal(size=(n_locals, 200, k))
        p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        avg = average_probability(list(p))  # a list of (n, K) arrays works too
        assert avg.shape == (200, k)
        np.testing.assert_allclose(avg.sum(1), 1.0)
        for rule in ("max", "mean"):
            labels = majority_vote(p, tie_break=rule)
            assert labels.shape == (200,) and labels.dtype.kind == "i"
            assert labels.tolist() == [reference_vote(p[:, j], rule) for j in range(200)]


def test_single_local_is_its_argmax():
    p = np.random.default_rng(1).dirichlet(np.ones(5), size=(1, 50))
    assert (majority_vote(p) == p[0].argmax(1)).all()
    np.testing.assert_allclose(average_probability(p), p[0])


def test_binary_sigmoid_column_equals_two_columns():
    q = np.array([[[0.7], [0.2]], [[0.1], [0.9]], [[0.8], [0.45]]])  # p(class 1), (3, 2, 1)
    two = np.concatenate([1 - q, q], axis=2)
    np.testing.assert_allclose(average_probability(q), average_probability(two))
    np.testing.assert_allclose(average_probability(q)[:, 1], [0.5333333, 0.5166667], rtol=1e-6)
    # image 0: votes 1, 0, 1 -> 1; image 1: votes 0, 1, 0 -> 0
    assert majority_vote(q).tolist() == majority_vote(two).tolist() == [1, 0]


@pytest.mark.parametrize("bad", [np.zeros((3, 4)), np.zeros((0, 4, 3)), np.zeros((2, 3, 4, 1))])
def test_bad_shapes_raise(bad):
    with pytest.raises(InputError, match="probs"):
        average_probability(bad)
    with pytest.raises(InputError, match="probs"):
        majority_vote(bad)


def test_unknown_tie_break_raises():
    with pytest.raises(InputError, match="tie_break"):
        majority_vote(TIE, tie_break="random")
