"""The raw kline contract and the candle value every room shares.

Raw topic value (``binance.kline.raw``), one shape whatever the source::

    {"source": "ws" | "rest" | "import" | "replay" | "resample",
     "market": "spot" | "usdm",
     "received_at": 1700000000123,          # ms, when we got it
     "event": {"e": "kline", "E": ..., "s": "BTCUSDT",
               "k": {"t", "T", "s", "i", "f", "L", "o", "c", "h", "l",
                     "v", "n", "x", "q", "V", "Q", "B"}},
     "bars": 5}                               # only for source="resample"

``event`` is the Binance websocket kline event exactly as Binance sent it (for ``ws``) or built
in the same shape (REST rows, importer rows).

Batch record: closed klines of one stream that travel together (a REST page, an import block,
the higher candles one resampler step completed) may share one record, keyed the same way::

    {"source": "rest" | "import" | "replay" | "resample", "market": ..., "received_at": ...,
     "symbol": "BTCUSDT", "interval": "1m",
     "klines": [[t, "o", "h", "l", "c", "v", T, "q", n, "V", "Q", "0"], ...],   # REST rows
     "bars": [5, 5, ...]}                     # only for source="resample", one per row

Rows are Binance REST kline rows verbatim (``GET /api/v3/klines``), every one closed and in
the record's stream; at most ``MAX_BATCH`` of them. The candle topology treats a batch exactly
as the same klines sent one by one, except that consecutive new candles are announced by one
``append`` event (``count`` = how many) instead of one each.

Fields a source does not know (freqtrade dumps have no quote volume, trade count or taker
volumes) are ``null``, never invented.

Prices and volumes: Binance sends decimal strings with at most 8 decimals. We parse them once,
here, into float64 and store Float64 in ClickHouse. float64 holds 15-17 significant digits, so
every Binance price and lot round-trips exactly through ``repr``; sums over many bars (resampled
volume) carry float rounding of ~1e-15 relative, which the tests compare with a relative
tolerance. Decimal would cost ~10x on the hot path for no precision a candle consumer can see.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, NoReturn

from schemas.intervals import BINANCE_INTERVALS, UnknownIntervalError, interval_ms, interval_offset_ms

Source = Literal["ws", "rest", "import", "replay", "resample"]
Market = Literal["spot", "usdm"]
SOURCES: tuple[str, ...] = ("ws", "rest", "import", "replay", "resample")
MARKETS: tuple[str, ...] = ("spot", "usdm")


class MalformedKlineError(ValueError):
    """A raw kline that does not follow the contract; the message says which field and why."""


@dataclass(slots=True, unsafe_hash=True)
class Candle:
    """One OHLCV bar of ``interval`` opening at ``open_time`` (ms since epoch, UTC).

    Treated as immutable (``dataclasses.replace`` to change one); not ``frozen`` because a
    frozen dataclass costs 4 µs per construction, a fifth of the topology's budget per kline.
    """

    symbol: str
    interval: str
    open_time: int
    close_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float | None
    trades: int | None
    taker_buy_base: float | None
    taker_buy_quote: float | None
    is_closed: bool
    source: str = "ws"
    #: how many 1m bars a resampled candle was built from; None for exchange candles
    bars: int | None = None
    #: exchange event time (ms) for ws, else close_time
    event_time: int = 0
    #: when we received it (ms)
    received_at: int = 0

    @property
    def key(self) -> str:
        return stream_key(self.symbol, self.interval)

    def same_values(self, other: Candle) -> bool:
        """True when the market content (not provenance) of two candles is identical."""
        return (
            self.open == other.open
            and self.high == other.high
            and self.low == other.low
            and self.close == other.close
            and self.volume == other.volume
            and self.quote_volume == other.quote_volume
            and self.trades == other.trades
            and self.taker_buy_base == other.taker_buy_base
            and self.taker_buy_quote == other.taker_buy_quote
            and self.is_closed == other.is_closed
            and self.bars == other.bars
        )

    def with_source(self, source: str) -> Candle:
        return replace(self, source=source)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candle:
        return cls(**d)


def stream_key(symbol: str, interval: str) -> str:
    """Kafka message key of a (symbol, interval) stream: ``BTCUSDT:1m``."""
    return f"{symbol}:{interval}"


def split_key(key: str) -> tuple[str, str]:
    symbol, _, interval = key.partition(":")
    return symbol, interval


def _number(v: Any, label: str, optional: bool = False) -> float | None:
    """``v`` as a finite non-negative float; ``label`` names it in the error (``field k.o``)."""
    if v is None:
        if optional:
            return None
        raise MalformedKlineError(f"{label} is missing")
    try:
        f = float(v)
    except (TypeError, ValueError) as exc:
        raise MalformedKlineError(f"{label}={v!r} is not a number") from exc
    if not 0.0 <= f < math.inf:  # NaN fails too
        raise MalformedKlineError(f"{label}={v!r} is not a finite non-negative number")
    return f


def _num(k: dict[str, Any], field: str, *, optional: bool = False) -> float | None:
    return _number(k.get(field), f"field k.{field}", optional)


def _int(k: dict[str, Any], field: str, *, optional: bool = False) -> int | None:
    v = k.get(field)
    if v is None:
        if optional:
            return None
        raise MalformedKlineError(f"field k.{field} is missing")
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise MalformedKlineError(f"field k.{field}={v!r} is not an integer")
    try:
        return int(v)
    except ValueError as exc:
        raise MalformedKlineError(f"field k.{field}={v!r} is not an integer") from exc


def _order_reason(where: str, o: float, h: float, low: float, c: float) -> str:
    """Why prices that fail ``low <= open, close <= high`` do, naming the field and its value."""
    if h < low:
        return f"{where}prices out of order: high={h!r} < low={low!r}"
    name, x = ("open", o) if not low <= o <= h else ("close", c)
    return f"{where}prices out of order: {name}={x!r} outside [low={low!r}, high={h!r}]"


_INF = math.inf
#: (length, offset) in ms of every interval, for the single-kline fast path
_STEP_OFFSET = {iv: (interval_ms(iv), interval_offset_ms(iv)) for iv in BINANCE_INTERVALS}


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _accepted_single(value: Any) -> Candle | None:
    """The candle of a well-formed single kline in a few comparisons, or None when anything is
    off (``candle_from_raw`` then checks field by field, and names what is wrong). Accepts
    exactly what the field-by-field path accepts with integer times: the websocket's shape."""
    try:
        event = value["event"]
        k = event["k"]
        source = value.get("source", "ws")
        symbol, interval, t, close_time, closed = k["s"], k["i"], k["t"], k["T"], k["x"]
        step, offset = _STEP_OFFSET[interval]
        o, h, low, c, v = float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"]), float(k["v"])
        q, tb, tq = _opt_float(k.get("q")), _opt_float(k.get("V")), _opt_float(k.get("Q"))
        n, bars, e_time, received = k.get("n"), value.get("bars"), event.get("E"), value.get("received_at")
    except (TypeError, ValueError, KeyError):
        return None
    # NaN fails every comparison, inf the upper bound: both fall to the field-by-field path
    if not (
        event.get("e") == "kline" and source in SOURCES and type(symbol) is str and symbol.isalnum()
        and symbol.isupper() and type(t) is int and type(close_time) is int
        and close_time == t + step - 1 and (t - offset) % step == 0 and type(closed) is bool
        and 0.0 <= low <= o <= h < _INF and low <= c <= h and 0.0 <= v < _INF
        and (q is None or 0.0 <= q < _INF) and (tb is None or 0.0 <= tb < _INF)
        and (tq is None or 0.0 <= tq < _INF) and (n is None or (type(n) is int and n >= 0))
        and (bars is None or (type(bars) is int and bars >= 1))
        and (e_time is None or type(e_time) is int) and (received is None or type(received) is int)
    ):  # fmt: skip
        return None
    return Candle(symbol, interval, t, close_time, o, h, low, c, v, q, n, tb, tq, closed, source, bars,
                  e_time or close_time, received or 0)  # fmt: skip


def candle_from_raw(value: Any) -> Candle:
    """Validate one raw-topic value and return its candle.

    Raises MalformedKlineError naming the offending field and value; never returns a
    half-parsed candle. What is refused, here and for batch rows alike: a time that is not an
    integer, an open time not aligned to the interval (weeks open on Monday), a close time other
    than open time + interval - 1 ms, a price or volume (quote, taker) that is missing where
    required, not a number, NaN, infinite or negative, ``high < low``, an open or close outside
    ``[low, high]``, a negative trade count, and for resampled candles a ``bars`` below 1.
    """
    fast = _accepted_single(value)
    return fast if fast is not None else checked_single(value)


def checked_single(value: Any) -> Candle:
    """``candle_from_raw`` field by field: the reference the fast path is tested against, and
    the path that names what is wrong with a kline the fast path did not accept."""
    if not isinstance(value, dict):
        raise MalformedKlineError(f"value is {type(value).__name__}, expected a JSON object")
    source = value.get("source", "ws")
    if source not in SOURCES:
        raise MalformedKlineError(f"source={source!r} is not one of {', '.join(SOURCES)}")
    event = value.get("event")
    if not isinstance(event, dict):
        raise MalformedKlineError("field event is missing or not an object")
    if event.get("e") != "kline":
        raise MalformedKlineError(f"event.e={event.get('e')!r}, expected 'kline'")
    k = event.get("k")
    if not isinstance(k, dict):
        raise MalformedKlineError("field event.k is missing or not an object")
    symbol = k.get("s") or event.get("s")
    if not isinstance(symbol, str) or not symbol.isalnum() or not symbol.isupper():
        raise MalformedKlineError(f"symbol {symbol!r} is not an upper-case Binance symbol")
    interval = k.get("i")
    try:
        step = interval_ms(str(interval))
    except UnknownIntervalError as exc:
        raise MalformedKlineError(f"field k.i: {exc}") from exc
    open_time = _int(k, "t")
    close_time = _int(k, "T")
    assert open_time is not None and close_time is not None
    if (open_time - interval_offset_ms(str(interval))) % step != 0:
        raise MalformedKlineError(f"open time k.t={open_time} is not aligned to {interval}")
    if close_time != open_time + step - 1:
        raise MalformedKlineError(f"close time k.T={close_time} != open time {open_time} + {interval} - 1 ms")
    o, h, low, c, v = (_num(k, f) for f in ("o", "h", "l", "c", "v"))
    assert o is not None and h is not None and low is not None and c is not None and v is not None
    if not (low <= o <= h and low <= c <= h):
        raise MalformedKlineError(_order_reason("", o, h, low, c))
    trades = _int(k, "n", optional=True)
    if trades is not None and trades < 0:
        raise MalformedKlineError(f"field k.n (trades)={trades} is negative")
    closed = k.get("x")
    if not isinstance(closed, bool):
        raise MalformedKlineError(f"field k.x={closed!r} is not a boolean")
    bars = value.get("bars")
    if bars is not None and (not isinstance(bars, int) or bars < 1):
        raise MalformedKlineError(f"bars={bars!r} is not a positive integer")
    return Candle(
        symbol=symbol,
        interval=str(interval),
        open_time=open_time,
        close_time=close_time,
        open=o,
        high=h,
        low=low,
        close=c,
        volume=v,
        quote_volume=_num(k, "q", optional=True),
        trades=trades,
        taker_buy_base=_num(k, "V", optional=True),
        taker_buy_quote=_num(k, "Q", optional=True),
        is_closed=closed,
        source=source,
        bars=bars,
        event_time=_int(event, "E", optional=True) or close_time,
        received_at=_int(value, "received_at", optional=True) or 0,
    )


#: most rows one batch record carries (Binance REST's largest klines page)
MAX_BATCH = 1000


def _row_num(v: Any, i: int, name: str, optional: bool = False) -> float | None:
    return _number(v, f"klines[{i}].{name}", optional)


def _batch_row(value: dict[str, Any], symbol: str, interval: str, step: int, offset: int, i: int,
               row: Any, bars: int | None) -> Candle:  # fmt: skip
    """One REST row of a batch. The fast path converts and checks in a few comparisons; a row
    it does not accept goes through ``_refuse_row``, which names what is wrong."""
    try:
        t, close_time, n = row[0], row[6], row[8]
        o, h, low, c, v = float(row[1]), float(row[2]), float(row[3]), float(row[4]), float(row[5])
        q, tb, tq = row[7], row[9], row[10]
        q = None if q is None else float(q)
        tb = None if tb is None else float(tb)
        tq = None if tq is None else float(tq)
    except (TypeError, ValueError, IndexError, KeyError):
        _refuse_row(i, row, step, offset, interval)
    # NaN fails every comparison, inf the upper bound: both fall to _refuse_row
    if not (
        type(t) is int and type(close_time) is int and close_time == t + step - 1
        and (t - offset) % step == 0 and 0.0 <= low <= o <= h < _INF and low <= c <= h
        and 0.0 <= v < _INF and (n is None or (type(n) is int and n >= 0))
        and (q is None or 0.0 <= q < _INF) and (tb is None or 0.0 <= tb < _INF)
        and (tq is None or 0.0 <= tq < _INF)
    ):  # fmt: skip
        _refuse_row(i, row, step, offset, interval)
    return Candle(symbol, interval, t, close_time, o, h, low, c, v, q, n, tb, tq, True,
                  value.get("source", "rest"), bars, close_time, value.get("received_at") or 0)  # fmt: skip


def _refuse_row(i: int, row: Any, step: int, offset: int, interval: str) -> NoReturn:
    """Raise MalformedKlineError naming what is wrong with batch row ``i``."""
    if not isinstance(row, list) or len(row) < 11:
        raise MalformedKlineError(f"klines[{i}] is not a Binance kline row (a list of 11 or 12 fields)")
    t, close_time, n = row[0], row[6], row[8]
    if type(t) is not int or type(close_time) is not int:
        raise MalformedKlineError(f"klines[{i}]: open/close times {t!r}/{close_time!r} are not integers")
    if (t - offset) % step != 0:
        raise MalformedKlineError(f"klines[{i}]: open time {t} is not aligned to {interval}")
    if close_time != t + step - 1:
        raise MalformedKlineError(f"klines[{i}]: close time {close_time} != open time {t} + {interval} - 1ms")
    o = _row_num(row[1], i, "open")
    h = _row_num(row[2], i, "high")
    low = _row_num(row[3], i, "low")
    c = _row_num(row[4], i, "close")
    _row_num(row[5], i, "volume")
    for j, name in ((7, "quote_volume"), (9, "taker_buy_base"), (10, "taker_buy_quote")):
        _row_num(row[j], i, name, True)
    assert o is not None and h is not None and low is not None and c is not None
    if not (low <= o <= h and low <= c <= h):
        raise MalformedKlineError(_order_reason(f"klines[{i}]: ", o, h, low, c))
    if n is not None and (type(n) is not int or n < 0):
        raise MalformedKlineError(f"klines[{i}].trades={n!r} is not a non-negative integer")
    raise MalformedKlineError(f"klines[{i}] is not a valid kline row: {row!r}"[:300])


def candles_from_raw(value: Any) -> tuple[list[Candle], list[tuple[int, str]]]:
    """Validate a raw-topic value, single kline or batch; returns (candles, refused rows).

    A single kline is all or nothing (MalformedKlineError). In a batch, a malformed envelope
    raises; a malformed row is refused alone, as ``(row index, reason)``, and the others pass.
    """
    if not isinstance(value, dict) or "klines" not in value:
        return [candle_from_raw(value)], []
    source = value.get("source")
    if source not in SOURCES or source == "ws":
        raise MalformedKlineError(f"batch source={source!r} is not one of rest, import, replay, resample")
    symbol, interval, rows = value.get("symbol"), value.get("interval"), value["klines"]
    if not isinstance(symbol, str) or not symbol.isalnum() or not symbol.isupper():
        raise MalformedKlineError(f"symbol {symbol!r} is not an upper-case Binance symbol")
    try:
        step = interval_ms(str(interval))
    except UnknownIntervalError as exc:
        raise MalformedKlineError(f"field interval: {exc}") from exc
    offset = interval_offset_ms(str(interval))
    if not isinstance(rows, list) or not rows or len(rows) > MAX_BATCH:
        raise MalformedKlineError(f"klines is not a list of 1..{MAX_BATCH} rows")
    bars = value.get("bars")
    if bars is not None and (not isinstance(bars, list) or len(bars) != len(rows)):
        raise MalformedKlineError("bars is not a list with one count per row")
    received_at = value.get("received_at")
    if received_at is not None and type(received_at) is not int:
        raise MalformedKlineError(f"received_at={received_at!r} is not an integer")
    good: list[Candle] = []
    bad: list[tuple[int, str]] = []
    for i, row in enumerate(rows):
        b = None if bars is None else bars[i]
        try:
            if b is not None and (type(b) is not int or b < 1):
                raise MalformedKlineError(f"bars[{i}]={b!r} is not a positive integer")
            good.append(_batch_row(value, symbol, str(interval), step, offset, i, row, b))
        except MalformedKlineError as exc:
            bad.append((i, str(exc)))
    return good, bad


def _dec(v: float | None) -> str | None:
    return None if v is None else repr(v)


def raw_batch(
    candles: Sequence[Candle], *, source: str, received_at: int, market: str = "spot"
) -> dict[str, Any]:
    """One batch record for closed ``candles`` of one stream (at most MAX_BATCH)."""
    if not candles or len(candles) > MAX_BATCH:
        raise ValueError(f"a batch holds 1..{MAX_BATCH} candles, got {len(candles)}")
    c0 = candles[0]
    if any(c.symbol != c0.symbol or c.interval != c0.interval or not c.is_closed for c in candles):
        raise ValueError("a batch holds closed candles of one stream")
    value: dict[str, Any] = {
        "source": source, "market": market, "received_at": received_at,
        "symbol": c0.symbol, "interval": c0.interval,
        "klines": [[c.open_time, repr(c.open), repr(c.high), repr(c.low), repr(c.close), repr(c.volume),
                    c.close_time, _dec(c.quote_volume), c.trades, _dec(c.taker_buy_base),
                    _dec(c.taker_buy_quote), "0"] for c in candles],
    }  # fmt: skip
    if c0.bars is not None:
        value["bars"] = [c.bars for c in candles]
    return value


def raw_from_candle(c: Candle, *, source: str, received_at: int, market: str = "spot") -> dict[str, Any]:
    """Build a raw-topic value for a candle that did not come from the websocket.

    Numbers are encoded as Binance encodes them (strings), so every consumer parses one shape.
    """
    value: dict[str, Any] = {
        "source": source,
        "market": market,
        "received_at": received_at,
        "event": {
            "e": "kline",
            "E": c.event_time or c.close_time,
            "s": c.symbol,
            "k": {
                "t": c.open_time,
                "T": c.close_time,
                "s": c.symbol,
                "i": c.interval,
                "o": repr(c.open),
                "c": repr(c.close),
                "h": repr(c.high),
                "l": repr(c.low),
                "v": repr(c.volume),
                "n": c.trades,
                "x": c.is_closed,
                "q": _dec(c.quote_volume),
                "V": _dec(c.taker_buy_base),
                "Q": _dec(c.taker_buy_quote),
            },
        },
    }
    if c.bars is not None:
        value["bars"] = c.bars
    return value
