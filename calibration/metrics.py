"""Classification quality and calibration of probability scores, defined once.

``p``: predicted probabilities of the positive class (label 1), ``y``: realized labels (0/1).

- **Reliability bins**: ``n_bins`` equal-width bins of ``p`` over [0, 1]; bin ``k`` holds
  ``k/n <= p < (k+1)/n``, the last bin also holds ``p == 1``. Per bin: count, mean predicted
  probability (confidence) and observed frequency of label 1. Empty bins are kept, with
  ``None`` means, so two reports line up bin by bin.
- **ECE** (expected calibration error) = sum over non-empty bins of
  ``count/N * |observed - confidence|``; **MCE** (maximum calibration error) = the largest
  ``|observed - confidence|`` over non-empty bins. Both in [0, 1].
- **Brier** = mean of ``(p - y)^2``; **log loss** = mean of ``-(y ln p + (1-y) ln(1-p))`` with
  ``p`` clipped to ``[1e-15, 1 - 1e-15]``.
- **AUC**: the probability that a random positive scores above a random negative, ties
  counted one half (Mann-Whitney U over average ranks); None when only one class is present.
- **Accuracy** at ``threshold``: share of rows where ``(p >= threshold) == y``.

Tests check these against hand-computed cases and scikit-learn (``brier_score_loss``,
``log_loss``, ``roc_auc_score``, ``calibration_curve(strategy="uniform")``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_BINS = 10
_EPS = 1e-15


@dataclass(frozen=True, slots=True)
class Bin:
    lower: float
    upper: float
    count: int
    confidence: float | None  #: mean predicted probability in the bin
    observed: float | None  #: share of label 1 in the bin


@dataclass(frozen=True, slots=True)
class Quality:
    rows: int
    positives: int
    auc: float | None
    accuracy: float
    brier: float
    log_loss: float
    ece: float
    mce: float
    bins: tuple[Bin, ...]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bins"] = [asdict(b) for b in self.bins]
        return d


def _arrays(p: Sequence[float] | np.ndarray, y: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pa = np.asarray(p, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    if pa.shape != ya.shape or pa.ndim != 1:
        raise ValueError(f"p and y must be 1-d of one length (got {pa.shape} and {ya.shape})")
    if pa.size == 0:
        raise ValueError("no rows to score")
    if np.isnan(pa).any() or (pa < 0).any() or (pa > 1).any():
        raise ValueError("probabilities must be in [0, 1]")
    if not np.isin(ya, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    return pa, ya


def reliability_bins(
    p: Sequence[float] | np.ndarray, y: Sequence[int] | np.ndarray, n_bins: int = DEFAULT_BINS
) -> tuple[Bin, ...]:
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    pa, ya = _arrays(p, y)
    idx = np.minimum((pa * n_bins).astype(np.int64), n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    conf = np.bincount(idx, weights=pa, minlength=n_bins)
    pos = np.bincount(idx, weights=ya, minlength=n_bins)
    out = []
    for k in range(n_bins):
        c = int(counts[k])
        out.append(
            Bin(
                k / n_bins,
                (k + 1) / n_bins,
                c,
                float(conf[k] / c) if c else None,
                float(pos[k] / c) if c else None,
            )
        )
    return tuple(out)


def calibration_errors(bins: Sequence[Bin]) -> tuple[float, float]:
    """(ECE, MCE) of reliability bins."""
    n = sum(b.count for b in bins)
    gaps = [
        (b.count, abs(b.observed - b.confidence))
        for b in bins
        if b.count and b.observed is not None and b.confidence is not None
    ]
    if not n or not gaps:
        raise ValueError("no rows in the bins")
    return sum(c * g for c, g in gaps) / n, max(g for _, g in gaps)


def auc(p: Sequence[float] | np.ndarray, y: Sequence[int] | np.ndarray) -> float | None:
    pa, ya = _arrays(p, y)
    n_pos = int(ya.sum())
    n_neg = ya.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(pa, kind="mergesort")
    ranks = np.empty(pa.size)
    sp = pa[order]
    # average ranks (1-based) over runs of equal scores
    starts = np.flatnonzero(np.r_[True, sp[1:] != sp[:-1]])
    ends = np.r_[starts[1:], sp.size]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[ya == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def quality(
    p: Sequence[float] | np.ndarray,
    y: Sequence[int] | np.ndarray,
    *,
    threshold: float = 0.5,
    n_bins: int = DEFAULT_BINS,
) -> Quality:
    """Every number above for one set of scores."""
    pa, ya = _arrays(p, y)
    bins = reliability_bins(pa, ya, n_bins)
    ece, mce = calibration_errors(bins)
    pc = np.clip(pa, _EPS, 1 - _EPS)
    return Quality(
        rows=int(pa.size),
        positives=int(ya.sum()),
        auc=auc(pa, ya),
        accuracy=float(((pa >= threshold) == (ya == 1)).mean()),
        brier=float(((pa - ya) ** 2).mean()),
        log_loss=float(-(ya * np.log(pc) + (1 - ya) * np.log(1 - pc)).mean()),
        ece=float(ece),
        mce=float(mce),
        bins=bins,
    )
