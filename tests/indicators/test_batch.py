"""Tier a: the batch reference of the features against TA-Lib and the definitions' value rules."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import talib

from indicators.batch import features
from indicators.definitions import FEATURES, LONGEST_LOOKBACK
from tests.indicators.helpers import frame
from tests.topologies.helpers import vision_candles, xrp_candles

MIN = 60_000
FIRST_OUTAGE = 26_040  # index of the XRP dump's first bar after its 150-bar outage


def _close(a: np.ndarray, b: np.ndarray, rel: float = 1e-9, abs_scale: float = 0.0) -> None:
    assert np.array_equal(np.isnan(a), np.isnan(b))
    ok = ~np.isnan(a)
    tol = np.maximum(rel * np.maximum(np.abs(a[ok]), np.abs(b[ok])), abs_scale)
    worst = np.max(np.abs(a[ok] - b[ok]) - tol)
    assert worst <= 0, worst


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(("xrp", 0, FIRST_OUTAGE), id="xrp-first-run"),
        pytest.param(("xrp", FIRST_OUTAGE, 33_212), id="xrp-between-outages"),
        pytest.param(("LINKUSDT", 0, 40_320), id="link-2026-02"),
    ],
)
def stretch(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
    """A contiguous run of real candles from its first bar: TA-Lib and the batch start there."""
    src, lo, hi = request.param
    cs = (xrp_candles() if src == "xrp" else vision_candles(src))[lo:hi]
    assert all(b.open_time - a.open_time == MIN for a, b in itertools.pairwise(cs))
    out = features(frame(cs), MIN)
    c = np.array([x.close for x in cs])
    h = np.array([x.high for x in cs])
    lo_ = np.array([x.low for x in cs])
    return c, h, lo_, out


def test_rsi_and_atr_are_talibs_wilder_from_the_same_first_bar(stretch) -> None:  # type: ignore[no-untyped-def]
    c, h, lo, out = stretch
    rsi = talib.RSI(c, 14)
    ours = out["rsi_14"].to_numpy()
    # TA-Lib answers 0 where the 14 first changes are all 0; the definition says 50 (no movement)
    flat = (ours == 50.0) & (rsi == 0.0)
    rsi[flat] = 50.0
    _close(ours, rsi)
    _close(out["atr_14"].to_numpy(), talib.ATR(h, lo, c, 14))


def test_emas_macd_and_moving_averages_are_talibs(stretch) -> None:  # type: ignore[no-untyped-def]
    c, _, _, out = stretch
    e12, e26 = talib.EMA(c, 12), talib.EMA(c, 26)
    _close(out["ema_12"].to_numpy(), e12)
    _close(out["ema_26"].to_numpy(), e26)
    macd = e12 - e26
    # cancellation: macd is held to 1e-12 of the price besides 1e-9 relative
    _close(out["macd"].to_numpy(), macd, abs_scale=1e-12 * float(np.nanmin(e26)))
    signal = np.full_like(c, np.nan)
    signal[25:] = talib.EMA(macd[25:], 9)  # TA-Lib's EMA seeded with the SMA of macd's first 9
    _close(out["macd_signal"].to_numpy(), signal, abs_scale=1e-12 * float(np.nanmin(e26)))
    _close(out["ma_20"].to_numpy(), talib.SMA(c, 20))
    _close(out["ma_50"].to_numpy(), talib.SMA(c, 50))
    # TA-Lib's own MACD seeds the fast EMA later (aligned on the slow one): it differs early on
    # and converges; after 400 bars both agree to 1e-6 of the price
    t_macd, _, _ = talib.MACD(c, 12, 26, 9)
    assert np.nanmax(np.abs(out["macd"].to_numpy()[400:] - t_macd[400:])) < 1e-6 * c.min()


def test_window_features_on_a_real_slice_by_hand() -> None:
    cs = xrp_candles()[1000:1060]
    out = features(frame(cs), MIN).iloc[-1]
    c = [x.close for x in cs]
    r1 = [math.log(b / a) for a, b in zip(c[-21:], c[-20:], strict=False)]
    assert out["ret_1"] == pytest.approx(math.log(c[-1] / c[-2]), rel=1e-12)
    assert out["ret_10"] == pytest.approx(math.log(c[-1] / c[-11]), rel=1e-12)
    assert out["rolling_vol_20"] == pytest.approx(float(np.std(r1, ddof=1)), rel=1e-9)
    v = np.array([x.volume for x in cs[-20:]])
    tp = np.array([(x.high + x.low + x.close) / 3 for x in cs[-20:]])
    assert out["vwap_20"] == pytest.approx(float((tp * v).sum() / v.sum()), rel=1e-12)
    assert out["volume_z_20"] == pytest.approx(float((v[-1] - v.mean()) / v.std(ddof=1)), rel=1e-9)
    assert out["range_pct"] == (cs[-1].high - cs[-1].low) / cs[-1].close
    assert bool(out["window_complete"]) and out["bars_missing_in_window"] == 0


def test_no_volume_and_no_movement_follow_the_value_rules() -> None:
    """Real candles then 30 flat bars with no volume: vwap and volume z null once their 20 bars
    are all flat; RSI is 50 only for a run with no movement at all."""
    cs = list(xrp_candles()[2000:2060])
    p = cs[29].close
    for i in range(30, 60):
        cs[i] = dataclasses.replace(cs[i], volume=0.0, close=p, high=p, low=p)
    out = features(frame(cs), MIN)
    # bar 49 is the first whose 20 volumes (bars 30 .. 49) are all zero
    assert out["vwap_20"].iloc[49:].isna().all() and out["vwap_20"].iloc[19:49].notna().all()
    assert out["volume_z_20"].iloc[49:].isna().all() and out["volume_z_20"].iloc[19:49].notna().all()
    # AG and AL only decay after the flat stretch starts: RSI stays defined and is not 50...
    assert out["rsi_14"].iloc[59] != 50.0
    # ...and a run that starts flat has no movement at all
    flat = [dataclasses.replace(x, close=cs[0].close, high=cs[0].close, low=cs[0].close) for x in cs[:20]]
    assert features(frame(flat), MIN)["rsi_14"].iloc[14:].tolist() == [50.0] * 6


def test_every_feature_starts_at_its_defined_lookback_after_each_real_outage() -> None:
    """Generic over FEATURES: null exactly before ``lookback - 1`` bars of the run, at the dump's
    start and after both real outages (150 and 283 bars)."""
    out = features(frame(xrp_candles()), MIN)
    assert list(out.columns[1 : 1 + len(FEATURES)]) == [f.name for f in FEATURES]
    assert LONGEST_LOOKBACK == 50 and len({f.name for f in FEATURES}) == len(FEATURES)
    for start in (0, FIRST_OUTAGE, 33_212):
        run = out.iloc[start : start + LONGEST_LOOKBACK + 10]
        for f in FEATURES:
            defined = run[f.name].notna().tolist()
            assert defined == [k >= f.lookback - 1 for k in range(len(run))], (start, f.name)
        assert run["window_complete"].tolist() == [k >= LONGEST_LOOKBACK - 1 for k in range(len(run))]
