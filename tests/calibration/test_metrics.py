"""calibration.metrics against hand-computed cases and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from calibration.metrics import auc, calibration_errors, quality, reliability_bins


def test_hand_computed_case() -> None:
    # bins of width 0.5: [0, .5) holds .1, .2, .4 (labels 0, 1, 0), [.5, 1] holds .6, .9, 1.0 (1, 1, 0)
    p = [0.1, 0.2, 0.4, 0.6, 0.9, 1.0]
    y = [0, 1, 0, 1, 1, 0]
    q = quality(p, y, n_bins=2)
    lo, hi = q.bins
    assert (lo.count, hi.count) == (3, 3)
    assert lo.confidence == pytest.approx(0.7 / 3) and lo.observed == pytest.approx(1 / 3)
    assert hi.confidence == pytest.approx(2.5 / 3) and hi.observed == pytest.approx(2 / 3)
    gap_lo, gap_hi = abs(1 / 3 - 0.7 / 3), abs(2 / 3 - 2.5 / 3)
    assert q.ece == pytest.approx(0.5 * gap_lo + 0.5 * gap_hi)
    assert q.mce == pytest.approx(max(gap_lo, gap_hi))
    assert q.brier == pytest.approx((0.01 + 0.64 + 0.16 + 0.16 + 0.01 + 1.0) / 6)
    # positives .2, .6, .9 against negatives .1, .4, 1.0: pairs won 1+0+0 + 1+1+0 + 1+1+0 = 5 of 9
    assert q.auc == pytest.approx(5 / 9)
    # accuracy at 0.5: predictions 0 0 0 1 1 1 vs 0 1 0 1 1 0 -> 4 of 6
    assert q.accuracy == pytest.approx(4 / 6)
    assert q.rows == 6 and q.positives == 3


def test_ties_count_half_and_perfect_calibration_is_zero() -> None:
    assert auc([0.5, 0.5], [0, 1]) == 0.5
    assert auc([0.3, 0.3, 0.3], [1, 1, 1]) is None
    bins = reliability_bins([0.25] * 4 + [0.75] * 4, [1, 0, 0, 0, 1, 1, 1, 0], n_bins=2)
    assert calibration_errors(bins) == (0.0, 0.0)


def test_against_scikit_learn_on_random_scores() -> None:
    rng = np.random.default_rng(7)
    p = rng.uniform(0, 1, 5000)
    y = (rng.uniform(0, 1, 5000) < p**1.5).astype(int)  # miscalibrated on purpose
    q = quality(p, y, n_bins=10)
    assert q.brier == pytest.approx(brier_score_loss(y, p), rel=1e-12)
    assert q.log_loss == pytest.approx(log_loss(y, p), rel=1e-9)
    assert q.auc == pytest.approx(roc_auc_score(y, p), rel=1e-12)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    ours = [b for b in q.bins if b.count]
    assert [b.observed for b in ours] == pytest.approx(list(prob_true), rel=1e-12)
    assert [b.confidence for b in ours] == pytest.approx(list(prob_pred), rel=1e-12)
    counts = np.array([b.count for b in ours])
    ece = float((counts / counts.sum() * np.abs(prob_true - prob_pred)).sum())
    assert q.ece == pytest.approx(ece, rel=1e-12)
    assert q.mce == pytest.approx(float(np.abs(prob_true - prob_pred).max()), rel=1e-12)
    assert q.ece > 0.05  # the miscalibration is seen


@pytest.mark.parametrize(
    ("p", "y", "msg"),
    [
        ([], [], "no rows"),
        ([0.2, 1.2], [0, 1], r"\[0, 1\]"),
        ([0.2], [2], "0 or 1"),
        ([0.1, 0.2], [1], "one length"),
        ([math.nan], [1], r"\[0, 1\]"),
    ],
)
def test_bad_input_is_a_clear_error(p: list[float], y: list[int], msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        quality(p, y)
