"""Batch reference of the rolling features: vectorised pandas over a stream's stored candles.

Written apart from the streaming update (``topologies.feature_logic``): rolling windows over the
whole series masked by each bar's position in its run, ``ewm(adjust=False)`` per run with the
seed put in place of the first defined input, and the window flags counted on the full interval
grid. Same definitions and gap rule (``indicators.definitions``), so both must agree on every
row; tests hold them to 1e-9 relative.
"""

from __future__ import annotations

import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # no stubs: pandas-stubs is not a dependency

from indicators.definitions import (
    ATR_14,
    EMA_12,
    EMA_26,
    FEATURE_NAMES,
    LONGEST_LOOKBACK,
    MA_20,
    MA_50,
    MACD,
    MACD_SIGNAL,
    RANGE_PCT,
    RET_1,
    RET_5,
    RET_10,
    ROLLING_VOL_20,
    ROW_FLAGS,
    RSI_14,
    VOLUME_Z_20,
    VWAP_20,
    Feature,
    ema_alpha,
    wilder_alpha,
)


def _seeded_ewm(
    x: pd.Series, seed: pd.Series, first: int, alpha: float, pos: pd.Series, run: pd.Series
) -> pd.Series:
    """EMA with ``alpha`` restarted in every run: null before ``pos == first``, ``seed`` at it,
    then the recursion over ``x``."""
    src = x.where(pos > first, np.nan).where(pos != first, seed)
    return src.groupby(run, sort=False).transform(lambda g: g.ewm(alpha=alpha, adjust=False).mean())


def _defined(x: pd.Series, f: Feature, pos: pd.Series) -> pd.Series:
    return x.where(pos >= f.lookback - 1)


def features(candles: pd.DataFrame, step_ms: int) -> pd.DataFrame:
    """One feature row per candle of one stream (rows sorted by open time, one per open time).

    Returns ``open_time``, every feature of FEATURES (NaN for null), ``window_complete``,
    ``bars_missing_in_window`` and ``window_has_repair``."""
    columns = ["open_time", *FEATURE_NAMES, *ROW_FLAGS]
    df = candles.sort_values("open_time").reset_index(drop=True)
    if df.empty:
        return pd.DataFrame(columns=columns)
    ot = df["open_time"].astype("int64")
    c = df["close"].astype("float64")
    h = df["high"].astype("float64")
    lo = df["low"].astype("float64")
    v = df["volume"].astype("float64")
    run = (ot.diff() != step_ms).cumsum()
    pos = run.groupby(run).cumcount()
    out = pd.DataFrame({"open_time": ot})

    cp = c.shift(1)
    r1 = np.log(c / cp)
    out[RET_1.name] = _defined(r1, RET_1, pos)
    out[RET_5.name] = _defined(np.log(c / c.shift(RET_5.period)), RET_5, pos)
    out[RET_10.name] = _defined(np.log(c / c.shift(RET_10.period)), RET_10, pos)

    d = c - cp
    gain = d.clip(lower=0.0)
    loss = (-d).clip(lower=0.0)
    n = RSI_14.period
    p = RSI_14.lookback - 1
    ag = _seeded_ewm(gain, gain.rolling(n).mean(), p, wilder_alpha(n), pos, run)
    al = _seeded_ewm(loss, loss.rolling(n).mean(), p, wilder_alpha(n), pos, run)
    tot = ag + al
    out[RSI_14.name] = (100.0 * ag / tot).where(tot != 0, 50.0).where(ag.notna())

    out[ROLLING_VOL_20.name] = _defined(r1.rolling(ROLLING_VOL_20.period).std(ddof=1), ROLLING_VOL_20, pos)
    out[MA_20.name] = _defined(c.rolling(MA_20.period).mean(), MA_20, pos)
    out[MA_50.name] = _defined(c.rolling(MA_50.period).mean(), MA_50, pos)

    emas = {}
    for f in (EMA_12, EMA_26):
        emas[f.name] = _seeded_ewm(
            c, c.rolling(f.period).mean(), f.lookback - 1, ema_alpha(f.period), pos, run
        )
        out[f.name] = emas[f.name]
    macd = emas[EMA_12.name] - emas[EMA_26.name]
    out[MACD.name] = _defined(macd, MACD, pos)
    ns = MACD_SIGNAL.period
    out[MACD_SIGNAL.name] = _seeded_ewm(
        macd, macd.rolling(ns).mean(), MACD_SIGNAL.lookback - 1, ema_alpha(ns), pos, run
    )

    tr = pd.concat([h - lo, (h - cp).abs(), (lo - cp).abs()], axis=1).max(axis=1).where(pos >= 1)
    na = ATR_14.period
    out[ATR_14.name] = _seeded_ewm(tr, tr.rolling(na).mean(), ATR_14.lookback - 1, wilder_alpha(na), pos, run)

    nw = VWAP_20.period
    sv = v.rolling(nw).sum()
    vwap = ((h + lo + c) / 3.0 * v).rolling(nw).sum() / sv
    out[VWAP_20.name] = _defined(vwap.where(sv != 0), VWAP_20, pos)

    nz = VOLUME_Z_20.period
    sd = v.rolling(nz).std(ddof=1)
    out[VOLUME_Z_20.name] = _defined(((v - v.rolling(nz).mean()) / sd).where(sd != 0), VOLUME_Z_20, pos)
    out[RANGE_PCT.name] = (h - lo) / c

    # window flags on the full grid: every slot from the first bar to the last, present or not
    grid = pd.RangeIndex(int(ot.iloc[0]), int(ot.iloc[-1]) + step_ms, step_ms)
    repaired = df["repaired"].astype(bool) if "repaired" in df else pd.Series(False, index=df.index)
    on_grid = pd.DataFrame({"present": 1.0, "rep": repaired.astype(float).to_numpy()}, index=ot.to_numpy())
    on_grid = on_grid.reindex(grid, fill_value=0.0)
    w = LONGEST_LOOKBACK
    present = on_grid["present"].rolling(w, min_periods=1).sum().loc[ot.to_numpy()].to_numpy()
    rep = on_grid["rep"].rolling(w, min_periods=1).max().loc[ot.to_numpy()].to_numpy()
    missing = (w - present).round().astype("int64")
    out["window_complete"] = missing == 0
    out["bars_missing_in_window"] = missing
    out["window_has_repair"] = rep > 0
    return out[columns]
