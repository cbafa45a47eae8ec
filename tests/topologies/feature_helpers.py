"""Stored candles and feature rows of the XRP/USDT tests, and their check against the batch
reference (``indicators.batch``)."""

from __future__ import annotations

from typing import Any

from clickhouse_connect.driver.client import Client

from indicators.batch import features
from indicators.definitions import FEATURE_NAMES, ROW_FLAGS
from schemas.intervals import interval_ms
from schemas.klines import Candle
from tests.indicators.helpers import frame, mismatches


def stored_candles(ch: Client, interval: str) -> list[Candle]:
    rows = ch.query(
        "SELECT toUnixTimestamp64Milli(open_time), open, high, low, close, volume FROM ohlcv_candles FINAL "
        "WHERE interval = {i:String} AND is_closed ORDER BY open_time",
        parameters={"i": interval},
    ).result_rows
    step = interval_ms(interval)
    return [Candle("XRPUSDT", interval, int(t), int(t) + step - 1, o, h, lo, c, v, None, None, None, None,
                   True) for t, o, h, lo, c, v in rows]  # fmt: skip


def stored_rows(ch: Client, interval: str) -> list[dict[str, Any]]:
    cols = ["open_time", *FEATURE_NAMES, *ROW_FLAGS, "feature_version", "reason", "bar_repaired"]
    res = ch.query(
        f"SELECT toUnixTimestamp64Milli(open_time), {', '.join(cols[1:])} FROM feature_snapshots FINAL "
        "WHERE interval = {i:String} ORDER BY open_time",
        parameters={"i": interval},
    )
    return [dict(zip(cols, r, strict=True)) for r in res.result_rows]


def assert_exact(ch: Client, interval: str, repaired: set[int] = frozenset()) -> list[dict[str, Any]]:  # type: ignore[assignment]
    """Every stored feature row equals the batch reference over the stored candles."""
    candles = stored_candles(ch, interval)
    rows = stored_rows(ch, interval)
    batch = features(frame(candles, repaired), interval_ms(interval))
    assert len(rows) == len(candles)
    bad = mismatches(rows, batch)
    assert not bad, bad[:10]
    return rows
