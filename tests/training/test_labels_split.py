"""The label and the purged time split, on real XRP candles (with the dump's real outages)."""

from __future__ import annotations

import numpy as np
import pytest

from registry.promotion import PromotionRules, recommend
from tests.topologies.helpers import xrp_candles
from training.labels import forward_labels
from training.split import time_split

MIN = 60_000


def test_labels_are_the_sign_of_the_forward_log_return_and_none_across_a_gap() -> None:
    cs = xrp_candles()
    t = np.array([c.open_time for c in cs])
    c = np.array([c.close for c in cs])
    y, r = forward_labels(t, c, MIN, horizon=5, dead_zone=0.0)
    by_time = {ti: k for k, ti in enumerate(t.tolist())}
    for k in range(0, len(cs), 97):  # a plain loop, independent of the vectorised code
        j = by_time.get(int(t[k]) + 5 * MIN)
        whole = j is not None and all(int(t[k]) + m * MIN in by_time for m in range(1, 6))
        if not whole:
            assert np.isnan(y[k]) and np.isnan(r[k])
            continue
        ret = np.log(c[j] / c[k])
        assert r[k] == pytest.approx(ret, rel=1e-12)
        assert (y[k] == 1.0) if ret > 0 else (y[k] == 0.0) if ret < 0 else np.isnan(y[k])
    # the bars whose horizon holds a real outage have no label
    holes = np.flatnonzero(np.diff(t) != MIN)
    assert holes.size == 2
    for h in holes:
        assert np.isnan(y[h - 4 : h + 1]).all()
    assert np.isnan(y[-5:]).all()
    # a dead zone widens what is unlabelled
    y_dz, _ = forward_labels(t, c, MIN, horizon=5, dead_zone=0.001)
    assert np.isnan(y_dz).sum() > np.isnan(y).sum()


def test_no_validation_label_window_overlaps_a_training_row_or_label() -> None:
    t = np.array([c.open_time for c in xrp_candles()])
    for horizon in (1, 5, 30):
        tr, va = time_split(t, MIN, horizon, 0.2)
        assert tr.size and va.size and tr.max() < va.min()
        first_val = t[va].min()
        # every training label window (t, t + h] ends before the first validation bar ...
        assert (t[tr] + horizon * MIN < first_val).all()
        # ... and no validation label window (t', t' + h] holds a training bar
        train_times = set(t[tr].tolist())
        assert not any(
            tv + m * MIN in train_times for tv in t[va][:200].tolist() for m in range(1, horizon + 1)
        )
        # only the rows whose label reaches across were dropped
        k = int(len(t) * 0.8)
        assert k - tr.size == int(((t[:k] + horizon * MIN) >= first_val).sum()) <= horizon


def test_split_refuses_what_cannot_be_split() -> None:
    with pytest.raises(ValueError, match="too few"):
        time_split(np.array([0]), MIN, 5, 0.2)
    with pytest.raises(ValueError, match="validation_fraction"):
        time_split(np.arange(100) * MIN, MIN, 5, 1.5)


def test_promotion_rules() -> None:
    rules = PromotionRules(min_auc_improve=0.01, max_brier_degrade=0.0, max_ece_degrade=0.01)
    prod = {"auc": 0.52, "brier": 0.25, "ece": 0.02}
    assert recommend({"auc": 0.53, "brier": 0.249, "ece": 0.025}, prod, rules).recommended
    r = recommend({"auc": 0.524, "brier": 0.249, "ece": 0.02}, prod, rules)  # +0.8% only
    assert not r.recommended and "AUC 0.5240 < 0.5252" in r.reasons[0]
    r = recommend({"auc": 0.60, "brier": 0.2501, "ece": 0.031}, prod, rules)
    assert not r.recommended and any("Brier" in x for x in r.reasons) and any("ECE" in x for x in r.reasons)
    assert recommend({"auc": 0.50, "brier": 0.3, "ece": 0.2}, None, rules).recommended
    assert not recommend({"auc": None, "brier": 0.3, "ece": 0.2}, None, rules).recommended
