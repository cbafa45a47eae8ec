"""``indicators.drift.feature_drift`` on hand-made rows: a shift injected into one feature is
flagged and no other; incomplete windows and nulls are left out; edge cases answer plainly."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from indicators.definitions import FEATURE_NAMES
from indicators.drift import feature_drift


def _rows(n: int, shift_from: int | None = None, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row: dict[str, Any] = {"open_time": i * 60_000, "window_complete": True}
        for name in FEATURE_NAMES:
            row[name] = rng.gauss(0.0, 1.0)
        if shift_from is not None and i >= shift_from:
            row["rsi_14"] += 1.0  # one standard deviation: z ~ sqrt(window) = 10
        rows.append(row)
    return rows


def test_a_shift_in_one_feature_is_flagged_and_no_other() -> None:
    report = feature_drift(_rows(200, shift_from=100), window=100, threshold=4.0)
    assert report.status == "drift" and report.drifted == ["rsi_14"]
    z = {f.name: f.z for f in report.features}
    assert 6 < z["rsi_14"] < 14  # type: ignore[operator]
    assert report.recent_span == (100 * 60_000, 199 * 60_000)
    assert report.reference_span == (0, 99 * 60_000)
    assert feature_drift(_rows(200), window=100, threshold=4.0).status == "ok"


def test_incomplete_windows_and_nulls_are_left_out() -> None:
    rows = _rows(260, shift_from=160)
    for r in rows[:60]:
        r["window_complete"] = False
        r["rsi_14"] = 1e9  # would dominate if counted
    for r in rows[160:170]:
        r["ma_20"] = None
    report = feature_drift(rows, window=100, threshold=4.0)
    ma = next(f for f in report.features if f.name == "ma_20")
    assert (report.rows, ma.recent_n, ma.reference_n) == (200, 90, 100)
    rsi = next(f for f in report.features if f.name == "rsi_14")
    expected = sum(r["rsi_14"] for r in rows[160:]) / 100
    assert rsi.recent_mean is not None and math.isclose(rsi.recent_mean, expected, rel_tol=1e-12)


def test_fewer_than_two_windows_is_insufficient_and_zero_spread_has_no_z() -> None:
    short = feature_drift(_rows(199), window=100, threshold=3.0)
    assert (short.status, short.features, short.recent_span) == ("insufficient", (), None)
    flat = _rows(40)
    for r in flat:
        r["range_pct"] = 0.5
    flat[-1]["range_pct"] = 0.6
    f = next(x for x in feature_drift(flat, window=20, threshold=3.0).features if x.name == "range_pct")
    assert (f.reference_std, f.z, f.drifted) == (0.0, None, True)
    with pytest.raises(ValueError, match="at least 2"):
        feature_drift(flat, window=1, threshold=3.0)
