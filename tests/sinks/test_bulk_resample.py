"""Higher candles of bulk-loaded history (``sinks.bulk_resample``) against plain pandas: the real
XRP dump (both real outages) and a LINK Vision month, with bars removed from inside buckets and
a candle the stream already built. Every complete or finished bucket, the resampler's values,
nothing else; a second run writes nothing; the stream's candle is kept."""

from __future__ import annotations

import math

import pandas as pd  # type: ignore[import-untyped]
import pytest
from clickhouse_connect.driver.client import Client

from schemas.intervals import interval_ms, interval_offset_ms
from sinks.bulk_resample import resample_history, resample_stored
from sinks.clickhouse_bulk import insert_candles
from tests.topologies.helpers import vision_candles, xrp_candles

pytestmark = pytest.mark.clickhouse
INTERVALS = ["5m", "15m", "1h", "4h", "1d", "1w"]
COLS = ["open_time", "open", "high", "low", "close", "volume", "quote_volume", "trades", "bars"]


def _reference(candles: list, interval: str) -> pd.DataFrame:  # type: ignore[type-arg]
    """What the resampler would build, in pandas: group by bucket, keep complete or finished ones."""
    df = pd.DataFrame(
        [(c.open_time, c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trades) for c in candles],
        columns=COLS[:-1],
    ).sort_values("open_time")
    step, off = interval_ms(interval), interval_offset_ms(interval)
    df["b"] = (df["open_time"] - off) // step * step + off
    g = df.groupby("b")
    out = pd.DataFrame({
        "open": g["open"].first(), "high": g["high"].max(), "low": g["low"].min(), "close": g["close"].last(),
        "volume": g["volume"].sum(), "quote_volume": g["quote_volume"].sum(min_count=1),
        "trades": g["trades"].sum(min_count=1), "bars": g.size(),
    })  # fmt: skip
    has_null = g["quote_volume"].apply(lambda s: s.isna().any())
    out.loc[has_null, "quote_volume"] = float("nan")
    newest = int(df["open_time"].max())
    keep = (out["bars"] == step // 60_000) | (out.index + step <= newest)
    return out[keep].rename_axis("open_time").reset_index()


def _stored(ch: Client, symbol: str, interval: str) -> pd.DataFrame:
    rows = ch.query(
        "SELECT toUnixTimestamp64Milli(open_time), open, high, low, close, volume, quote_volume, trades, "
        "bars "
        "FROM ohlcv_candles FINAL WHERE symbol = {s:String} AND interval = {i:String} AND is_closed "
        "AND source = 'resample' ORDER BY open_time",
        parameters={"s": symbol, "i": interval},
    ).result_rows
    return pd.DataFrame(rows, columns=COLS)


def test_history_resamples_like_the_stream_and_a_second_run_writes_nothing(ch: Client) -> None:
    xrp = list(xrp_candles())
    link = list(vision_candles("LINKUSDT"))
    # faults: bars taken out of the middle of buckets (besides the dump's real outages)
    xrp = [c for k, c in enumerate(xrp) if k % 997 not in (3, 4)]
    link = [c for k, c in enumerate(link) if k % 1201 != 7]
    insert_candles(ch, xrp + link)
    # a 5m candle the stream already built (other values): kept, not replaced
    first = (xrp[0].open_time // 300_000 + 1) * 300_000
    built = next(c for c in xrp if c.open_time == first)
    ch.insert("ohlcv_candles", [["XRPUSDT", "5m", first, first + 299_999, 1.0, 2.0, 0.5, 1.5, 9.0, True,
                                 "resample", 5, 0, 1, first + 299_999]],
              column_names=["symbol", "interval", "open_time", "close_time", "open", "high", "low",
                            "close", "volume", "is_closed", "source", "bars", "revision", "version",
                            "event_time"])  # fmt: skip
    results = resample_history(ch, ["1m", *INTERVALS])
    assert {(r.symbol, r.interval) for r in results} == {
        (s, i) for s in ("LINKUSDT", "XRPUSDT") for i in INTERVALS
    }
    for symbol, candles in (("XRPUSDT", xrp), ("LINKUSDT", link)):
        for interval in INTERVALS:
            want = _reference(candles, interval)
            got = _stored(ch, symbol, interval)
            where = f"{symbol} {interval}"
            if symbol == "XRPUSDT" and interval == "5m":
                kept = got[got["open_time"] == first].iloc[0]
                assert (kept["open"], kept["volume"]) == (1.0, 9.0) and built.open != 1.0
                got, want = got[got["open_time"] != first], want[want["open_time"] != first]
            assert list(got["open_time"]) == list(want["open_time"]), where
            assert (got[["open", "high", "low", "close"]].to_numpy() == want[["open", "high", "low", "close"]]
                    .to_numpy()).all(), where  # fmt: skip
            assert list(got["bars"]) == list(want["bars"]), where
            assert [None if pd.isna(t) else int(t) for t in got["trades"]] == [
                None if pd.isna(t) else int(t) for t in want["trades"]
            ], where
            for col in ("volume", "quote_volume"):
                for a, b in zip(got[col], want[col], strict=True):
                    assert (b is None or math.isnan(b)) if a is None else math.isclose(a, b, rel_tol=1e-12), (
                        where
                    )
            partial = want[want["bars"] < interval_ms(interval) // 60_000]
            assert interval == "1w" or len(partial) > 0, where  # the faults and outages show as short buckets
    # every bucket is written once: the second run finds nothing to do
    assert sum(r.written for r in resample_history(ch, INTERVALS)) == 0
    with pytest.raises(ValueError, match="above 1m"):
        resample_stored(ch, "XRPUSDT", "1m")
