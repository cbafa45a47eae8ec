"""Candles as the batch reference's frame, and the comparison of feature rows with it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from indicators.definitions import FEATURE_NAMES, ROW_FLAGS
from schemas.klines import Candle

REL = 1e-9
#: macd and its signal are differences of two EMAs of the price: near a zero crossing the
#: rounding of either EMA (~1e-16 of the price) dominates, so they are held to 1e-9 relative or
#: 1e-12 of ema_26, whichever is larger (thousands of ulps of the operands)
CANCELLING = {"macd": 1e-12, "macd_signal": 1e-12}
FLAGS = ROW_FLAGS


def frame(candles: Iterable[Candle], repaired: Iterable[int] = ()) -> pd.DataFrame:
    cs = list(candles)
    rep = set(repaired)
    return pd.DataFrame(
        {
            "open_time": [c.open_time for c in cs],
            "open": [c.open for c in cs],
            "high": [c.high for c in cs],
            "low": [c.low for c in cs],
            "close": [c.close for c in cs],
            "volume": [c.volume for c in cs],
            "repaired": [c.open_time in rep for c in cs],
        }
    )


def mismatches(rows: Sequence[Mapping[str, Any]], batch: pd.DataFrame) -> list[str]:
    """Every (open time, column) where the streaming rows and the batch frame disagree."""
    assert [r["open_time"] for r in rows] == batch["open_time"].tolist()
    bad: list[str] = []
    e26 = np.abs(batch["ema_26"].to_numpy(dtype=float))
    for name in FEATURE_NAMES:
        s = np.array([np.nan if r[name] is None else r[name] for r in rows], dtype=float)
        b = batch[name].to_numpy(dtype=float)
        null_diff = np.isnan(s) != np.isnan(b)
        tol = REL * np.maximum(np.abs(s), np.abs(b))
        if name in CANCELLING:
            tol = np.maximum(tol, CANCELLING[name] * np.nan_to_num(e26))
        with np.errstate(invalid="ignore"):
            off = ~np.isnan(s) & ~np.isnan(b) & (np.abs(s - b) > tol)
        for i in np.flatnonzero(null_diff | off)[:5]:
            bad.append(f"{name}@{rows[i]['open_time']}: stream={s[i]!r} batch={b[i]!r}")
    for name in FLAGS:
        s_f = [r[name] for r in rows]
        b_f = batch[name].tolist()
        bad.extend(
            f"{name}@{r['open_time']}: stream={x!r} batch={y!r}"
            for r, x, y in zip(rows, s_f, b_f, strict=True)
            if x != y
        )
    return bad


def close(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=REL, abs_tol=0.0)
