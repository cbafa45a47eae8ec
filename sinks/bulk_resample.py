"""The higher candles of bulk-loaded history, built in ClickHouse.

A bulk load (``sinks.clickhouse_bulk``) writes 1m candles without events, so the resampler
(``topologies.resample``), which builds 5m … 1w candles from the 1m events, never sees them:
imported history would have no higher candles. ``resample_stored`` builds them with one
``INSERT … SELECT`` per interval over the stored closed 1m candles, by the resampler's rule and
values:

- a bucket is written when it is complete (every 1m bar present) or over (a later 1m bar is
  stored); the newest, unfinished bucket is left to the live resampler, which loads its stored
  1m bars from ClickHouse on first touch;
- first open, highest high, lowest low, last close, summed volume; quote volume, trades and
  the taker volumes summed, or NULL when a bar lacks them; ``bars`` = the 1m bars it holds;
  ``source = 'resample'``, revision 0 (``version = 1``), ``event_time = close_time``.

Idempotent: a bucket that already holds a closed candle (built live, or by an earlier run) is
skipped, so running it twice writes nothing and it never replaces what the stream wrote.
"""

from __future__ import annotations

from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from ohlcv.errors import ClickHouseUnavailableError
from schemas.intervals import interval_ms, interval_offset_ms

MINUTE_MS = 60_000

_BUCKETS = """
SELECT b, argMin(open, t) AS o, max(high) AS h, min(low) AS l, argMax(close, t) AS c, sum(volume) AS v,
       if(countIf(quote_volume IS NULL) > 0, NULL, sum(quote_volume)) AS qv,
       if(countIf(trades IS NULL) > 0, NULL, sum(trades)) AS tr,
       if(countIf(taker_buy_base IS NULL) > 0, NULL, sum(taker_buy_base)) AS tb,
       if(countIf(taker_buy_quote IS NULL) > 0, NULL, sum(taker_buy_quote)) AS tq,
       count() AS n
FROM (
    SELECT toUnixTimestamp64Milli(open_time) AS t,
           intDiv(t - {off:Int64}, {step:Int64}) * {step:Int64} + {off:Int64} AS b,
           open, high, low, close, volume, quote_volume, trades, taker_buy_base, taker_buy_quote
    FROM ohlcv_candles FINAL
    WHERE symbol = {s:String} AND interval = '1m' AND is_closed
)
GROUP BY b
HAVING (n = {full:UInt32} OR b + {step:Int64} <= {newest:Int64})
   AND b NOT IN (SELECT toUnixTimestamp64Milli(open_time) FROM ohlcv_candles FINAL
                 WHERE symbol = {s:String} AND interval = {iv:String} AND is_closed)
"""

_COLUMNS = (
    "symbol, interval, open_time, close_time, open, high, low, close, volume, quote_volume, trades, "
    "taker_buy_base, taker_buy_quote, is_closed, source, bars, revision, version, event_time"
)
_INSERT = (
    f"INSERT INTO ohlcv_candles ({_COLUMNS}) "  # noqa: S608 - constant SQL; values are bound parameters
    "SELECT {s:String}, {iv:String}, fromUnixTimestamp64Milli(b), "
    "fromUnixTimestamp64Milli(b + {step:Int64} - 1), o, h, l, c, v, qv, tr, tb, tq, true, 'resample', "
    "toUInt16(n), 0, 1, fromUnixTimestamp64Milli(b + {step:Int64} - 1) "
    f"FROM ({_BUCKETS})"
)


@dataclass(frozen=True)
class ResampleResult:
    symbol: str
    interval: str
    written: int  #: higher candles inserted (buckets already stored are skipped)


def resample_stored(client: Client, symbol: str, interval: str) -> ResampleResult:
    """Write the ``interval`` candles of ``symbol``'s stored closed 1m bars that are not stored."""
    step = interval_ms(interval)
    if step <= MINUTE_MS:
        raise ValueError(f"resample_stored builds intervals above 1m, not {interval}")
    try:
        (newest,) = client.query(
            "SELECT max(toUnixTimestamp64Milli(open_time)) FROM ohlcv_candles "
            "WHERE symbol = {s:String} AND interval = '1m' AND is_closed",
            parameters={"s": symbol},
        ).result_rows[0]
        params = {"s": symbol, "iv": interval, "step": step, "off": interval_offset_ms(interval),
                  "full": step // MINUTE_MS, "newest": int(newest or 0)}  # fmt: skip
        (due,) = client.query(f"SELECT count() FROM ({_BUCKETS})", parameters=params).result_rows[0]  # noqa: S608
        if due:
            client.command(_INSERT, parameters=params)
    except Exception as exc:
        raise ClickHouseUnavailableError(f"resampling {symbol} 1m into {interval} failed: {exc}") from exc
    return ResampleResult(symbol, interval, int(due))


def resample_history(client: Client, intervals: list[str]) -> list[ResampleResult]:
    """``resample_stored`` for every symbol with stored 1m candles and every interval above 1m."""
    symbols = [s for (s,) in client.query(
        "SELECT DISTINCT symbol FROM ohlcv_candles WHERE interval = '1m' ORDER BY symbol"
    ).result_rows]  # fmt: skip
    higher = sorted({i for i in intervals if interval_ms(i) > MINUTE_MS}, key=interval_ms)
    return [resample_stored(client, s, i) for s in symbols for i in higher]
