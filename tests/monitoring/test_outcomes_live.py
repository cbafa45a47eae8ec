"""Realized outcomes and live calibration on real candles, against references written apart:
the label in plain pandas, the calibration numbers with scikit-learn."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_auc_score

from monitoring import live
from monitoring.outcomes import realize
from tests.monitoring.conftest import Scored

pytestmark = [pytest.mark.clickhouse]


def _pandas_labels(candles: object, horizon: int) -> dict[int, int]:
    """sign(ln(close[t+h] / close[t])) where all h bars after t exist (reindexed minute grid)."""
    df = pd.DataFrame([(c.open_time, c.close) for c in candles], columns=["t", "close"]).set_index("t")
    grid = df.reindex(range(int(df.index[0]), int(df.index[-1]) + 1, 60_000))
    present = grid["close"].notna().astype(int)
    whole = present[::-1].rolling(horizon + 1).sum()[::-1] == horizon + 1
    ret = np.log(grid["close"].shift(-horizon) / grid["close"])
    out = {}
    for t, ok, r in zip(grid.index, whole, ret, strict=True):
        if ok and r != 0:
            out[int(t)] = int(r > 0)
    return out


def test_realized_outcomes_are_the_forward_return_signs(scored: Scored) -> None:
    got = realize(scored.ch, "XRPUSDT", "1m", horizon=5, dead_zone=0.0, window=100_000)
    assert got.scores == len(scored.scores) - 5  # the newest 5 bars have no horizon yet
    ref = _pandas_labels(scored.candles, 5)
    rows = scored.ch.query(
        "SELECT toUnixTimestamp64Milli(open_time), label, forward_return, model_id FROM score_outcomes FINAL"
    ).result_rows
    want = {t: ref[t] for t in (s["open_time"] for s in scored.scores) if t in ref}
    assert {int(t): int(lab) for t, lab, _, _ in rows} == want
    assert got.labelled == len(want) and got.unlabelled == got.scores - len(want) > 0  # real outages
    assert {m for *_, m in rows} == {scored.model.model_id}
    # a re-run writes the same outcomes again (idempotent)
    realize(scored.ch, "XRPUSDT", "1m", horizon=5, dead_zone=0.0, window=100_000)
    assert scored.ch.query("SELECT count() FROM score_outcomes FINAL").result_rows[0][0] == len(want)


def test_a_repaired_candle_relabels_its_scores(scored: Scored) -> None:
    realize(scored.ch, "XRPUSDT", "1m", horizon=5, dead_zone=0.0, window=100_000)
    t0 = scored.scores[-100]["open_time"]
    (lab,) = scored.ch.query(
        "SELECT label FROM score_outcomes FINAL WHERE open_time = fromUnixTimestamp64Milli({t:Int64})",
        parameters={"t": t0},
    ).result_rows[0]
    c5 = next(c for c in scored.candles if c.open_time == t0 + 5 * 60_000)
    c0 = next(c for c in scored.candles if c.open_time == t0)
    # a revised close 5 bars later, far to the other side of c0's close (a repair of that candle)
    revised = dataclasses.replace(c5, close=c0.close * (0.5 if lab else 2.0), low=min(c5.low, c0.close * 0.5),
                                  high=max(c5.high, c0.close * 2.0))  # fmt: skip
    from sinks.clickhouse_bulk import insert_block
    from streams.importers import CandleBlock

    insert_block(scored.ch, CandleBlock.from_candles("XRPUSDT", "1m", [revised]), revision=1, source="rest")
    realize(scored.ch, "XRPUSDT", "1m", horizon=5, dead_zone=0.0, window=100_000)
    (lab2,) = scored.ch.query(
        "SELECT label FROM score_outcomes FINAL WHERE open_time = fromUnixTimestamp64Milli({t:Int64})",
        parameters={"t": t0},
    ).result_rows[0]
    assert lab2 == 1 - lab


def test_live_calibration_matches_sklearn_and_keeps_flagged_scores_apart(scored: Scored) -> None:
    realize(scored.ch, "XRPUSDT", "1m", horizon=5, dead_zone=0.0, window=100_000)
    cfg = live.LiveConfig(window=30_000, min_rows=100)
    lc = live.check(scored.ch, scored.model, cfg)
    rows = scored.ch.query(
        "SELECT toUnixTimestamp64Milli(open_time), probability, label, window_complete, window_has_repair "
        "FROM score_outcomes FINAL ORDER BY open_time DESC"
    ).result_rows
    clean = [r for r in rows if r[3] and not r[4]][:30_000]
    flagged = [r for r in rows if not (r[3] and not r[4]) and r[0] >= clean[-1][0]]
    assert flagged, "a real outage puts scores on incomplete windows in the span"
    assert len([r for r in rows if not (r[3] and not r[4])]) > len(flagged), "the other outage is older"
    assert lc.rows == 30_000 and lc.flagged_rows == len(flagged)
    assert lc.flagged is not None and lc.flagged.rows == len(flagged)
    p = np.array([r[1] for r in clean])
    y = np.array([r[2] for r in clean])
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, 11)[1:-1], p, side="right"), minlength=10)
    counts = counts[counts > 0]
    assert lc.live is not None
    assert lc.live.ece == pytest.approx(
        float(np.sum(counts / counts.sum() * np.abs(prob_true - prob_pred))), abs=1e-12
    )
    assert lc.live.brier == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert lc.live.auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert lc.ece_delta == pytest.approx(lc.live.ece - scored.model.metrics["ece"], abs=1e-15)
    assert lc.window == (clean[-1][0], clean[0][0])
    # recorded: a calibration_checks row and a live metrics row
    (check,) = live.checks(scored.ch, "XRPUSDT", "1m")
    assert (
        check["rows"] == 30_000
        and check["ece"] == pytest.approx(lc.live.ece)
        and check["status"] == lc.status
    )
    n_live = scored.ch.query("SELECT count() FROM model_metrics_history WHERE scope = 'live'").result_rows[0][
        0
    ]
    assert n_live == 1


def test_the_breach_streak_recommends_a_retrain_after_n_breaches() -> None:
    metrics = {"ece": 0.02, "mce": 0.05, "brier": 0.25, "auc": 0.55, "rows": 100, "bins": []}
    model = SimpleNamespace(symbol="XRPUSDT", interval="1m", model_id="m1", metrics=metrics)
    cfg = live.LiveConfig(window=200, min_rows=50, ece_abs=0.05, ece_rel=0.5, streak_n=3)
    rng = np.random.default_rng(5)
    bad = [(k, 0.9, int(rng.random() < 0.5), True) for k in range(200)]  # ECE ~0.4: a breach
    good = [(k, 0.5, k % 2, True) for k in range(200)]  # ECE 0: no breach
    few = bad[:10]  # too few rows: neither breaks nor extends the streak
    streak, seen = 0, []
    for rows in (bad, bad, few, good, bad, bad, bad):
        lc = live.measure(rows, model, cfg, streak)  # type: ignore[arg-type]
        streak = lc.streak
        seen.append((lc.status, lc.streak, lc.recommend_retrain))
    assert seen == [("breach", 1, False), ("breach", 2, False), ("insufficient", 2, False), ("ok", 0, False),
                    ("breach", 1, False), ("breach", 2, False), ("breach", 3, True)]  # fmt: skip
    # the relative threshold matters too: a small production ECE makes a small delta relative
    lc = live.measure(bad, SimpleNamespace(**{**model.__dict__, "metrics": {**model.metrics, "ece": 0.39}}),  # type: ignore[arg-type]
                      cfg, 0)  # fmt: skip
    assert not lc.breach
