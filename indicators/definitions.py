"""The rolling features of a (symbol, interval) candle stream, each defined once.

Every closed candle of a stream gets one feature row. ``FEATURES`` names each feature, how
many contiguous bars it needs (``lookback``, the current bar included) and its formula; the
streaming state (``topologies.feature_logic``) and the batch reference (``indicators.batch``)
take their periods, seeds and lookbacks from here and implement the formulas independently, so
a parity test between them checks both.

Notation: bar ``t`` of the stream, ``c``/``h``/``l``/``v`` its close, high, low and volume;
``t-k`` is the bar ``k`` intervals earlier on the stream's grid.

Gap rule (a *hole* is a slot of the interval grid with no closed candle):

- The stream is a sequence of *runs*: maximal stretches of bars with no hole between them.
  ``pos`` is a bar's index inside its run (0 for the first bar after a hole or of the stream).
- A feature is null at bars with ``pos < lookback - 1``: it needs ``lookback`` bars of its own
  run, so it is never computed across a hole. The recursive features (EMA, Wilder) re-seed
  from scratch in every run, exactly as at the start of the stream.
- ``window_complete``: the last ``LONGEST_LOOKBACK`` slots (``t-49 .. t``) all hold a bar, i.e.
  ``pos >= LONGEST_LOOKBACK - 1``; then every feature is defined (up to the value rules
  below: RSI with no movement, VWAP with no volume, volume z with zero spread).
- ``bars_missing_in_window``: how many of those ``LONGEST_LOOKBACK`` slots hold no bar,
  slots before the stream's first bar included (the first bar ever has 49 missing).
- ``window_has_repair``: a bar in those slots was repaired (its values revised after it was
  first seen) or late-filled (it arrived after a later bar).

A late fill that closes a hole joins two runs into one: every bar after it in the joined run
is derived again (its recursive features now carry through).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: bumped whenever a definition below changes; stored with every feature row
FEATURE_SET_VERSION = 1

Kind = Literal["window", "recursive", "bar"]


@dataclass(frozen=True, slots=True)
class Feature:
    """One feature: its column ``name``, the contiguous bars it needs (``lookback``, current
    bar included; the first defined value is at ``pos == lookback - 1``), its ``period`` and
    its ``formula``."""

    name: str
    lookback: int
    period: int
    kind: Kind
    formula: str


RET_1 = Feature("ret_1", 2, 1, "window", "ln(c_t / c_{t-1})")
RET_5 = Feature("ret_5", 6, 5, "window", "ln(c_t / c_{t-5})")
RET_10 = Feature("ret_10", 11, 10, "window", "ln(c_t / c_{t-10})")
RSI_14 = Feature(
    "rsi_14", 15, 14, "recursive",
    "Wilder RSI. d_j = c_j - c_{j-1}, gain g_j = max(d_j, 0), loss l_j = max(-d_j, 0). "
    "Seed at pos 14: AG = mean(g_1..g_14), AL = mean(l_1..l_14) (the first 14 changes of the "
    "run); after: AG_t = (13 AG_{t-1} + g_t) / 14, likewise AL. rsi = 100 AG / (AG + AL), "
    "50 when AG + AL = 0 (no movement over the whole smoothing).",
)  # fmt: skip
ROLLING_VOL_20 = Feature(
    "rolling_vol_20", 21, 20, "window",
    "sample standard deviation (ddof = 1, divisor 19) of the last 20 one-bar log returns "
    "ln(c_j / c_{j-1}), j = t-19 .. t (21 closes)",
)  # fmt: skip
MA_20 = Feature("ma_20", 20, 20, "window", "mean(c_{t-19} .. c_t)")
MA_50 = Feature("ma_50", 50, 50, "window", "mean(c_{t-49} .. c_t)")
EMA_12 = Feature(
    "ema_12", 12, 12, "recursive",
    "alpha = 2 / (12 + 1). Seed at pos 11: the simple mean of the run's first 12 closes; after: "
    "e_t = e_{t-1} + alpha (c_t - e_{t-1})",
)  # fmt: skip
EMA_26 = Feature("ema_26", 26, 26, "recursive", "as ema_12 with n = 26: alpha = 2/27, seed at pos 25")
MACD = Feature("macd", 26, 26, "recursive", "ema_12 - ema_26 (defined from pos 25)")
MACD_SIGNAL = Feature(
    "macd_signal", 34, 9, "recursive",
    "EMA of macd with n = 9 (alpha = 0.2), seeded at pos 33 with the mean of the run's first 9 "
    "macd values (pos 25 .. 33)",
)  # fmt: skip
ATR_14 = Feature(
    "atr_14", 15, 14, "recursive",
    "Wilder ATR. TR_j = max(h_j - l_j, |h_j - c_{j-1}|, |l_j - c_{j-1}|) for pos >= 1. Seed at "
    "pos 14: mean(TR_1..TR_14); after: ATR_t = (13 ATR_{t-1} + TR_t) / 14",
)  # fmt: skip
VWAP_20 = Feature(
    "vwap_20", 20, 20, "window",
    "sum(tp_j v_j) / sum(v_j) over j = t-19 .. t with the typical price tp = (h + l + c) / 3; "
    "null when sum(v_j) = 0 (no trade, no volume-weighted price)",
)  # fmt: skip
VOLUME_Z_20 = Feature(
    "volume_z_20", 20, 20, "window",
    "(v_t - mean(v_{t-19} .. v_t)) / stdev(v_{t-19} .. v_t), sample stdev (ddof = 1); null "
    "when the stdev is 0 (all 20 volumes equal)",
)  # fmt: skip
RANGE_PCT = Feature("range_pct", 1, 1, "bar", "(h_t - l_t) / c_t")

FEATURES: tuple[Feature, ...] = (
    RET_1, RET_5, RET_10, RSI_14, ROLLING_VOL_20, MA_20, MA_50, EMA_12, EMA_26, MACD,
    MACD_SIGNAL, ATR_14, VWAP_20, VOLUME_Z_20, RANGE_PCT,
)  # fmt: skip
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)

#: the longest lookback of any feature: the window ``window_complete`` and its counts cover
LONGEST_LOOKBACK = max(f.lookback for f in FEATURES)

#: columns of every feature row besides the features
ROW_FLAGS: tuple[str, ...] = ("window_complete", "bars_missing_in_window", "window_has_repair")


def ema_alpha(period: int) -> float:
    """The EMA smoothing factor 2 / (n + 1)."""
    return 2.0 / (period + 1)


def wilder_alpha(period: int) -> float:
    """Wilder's smoothing factor 1 / n (an EMA with alpha = 1/n)."""
    return 1.0 / period
