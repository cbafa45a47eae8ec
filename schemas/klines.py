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
in the same shape (REST rows, importer rows). Fields a source does not know (freqtrade dumps have
no quote volume, trade count or taker volumes) are ``null``, never invented.

Prices and volumes: Binance sends decimal strings with at most 8 decimals. We parse them once,
here, into float64 and store Float64 in ClickHouse. float64 holds 15-17 significant digits, so
every Binance price and lot round-trips exactly through ``repr``; sums over many bars (resampled
volume) carry float rounding of ~1e-15 relative, which the tests compare with a relative
tolerance. Decimal would cost ~10x on the hot path for no precision a candle consumer can see.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from schemas.intervals import UnknownIntervalError, interval_ms

Source = Literal["ws", "rest", "import", "replay", "resample"]
Market = Literal["spot", "usdm"]
SOURCES: tuple[str, ...] = ("ws", "rest", "import", "replay", "resample")
MARKETS: tuple[str, ...] = ("spot", "usdm")


class MalformedKlineError(ValueError):
    """A raw kline that does not follow the contract; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class Candle:
    """One OHLCV bar of ``interval`` opening at ``open_time`` (ms since epoch, UTC)."""

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


def _num(k: dict[str, Any], field: str, *, optional: bool = False) -> float | None:
    v = k.get(field)
    if v is None:
        if optional:
            return None
        raise MalformedKlineError(f"field k.{field} is missing")
    try:
        f = float(v)
    except (TypeError, ValueError) as exc:
        raise MalformedKlineError(f"field k.{field}={v!r} is not a number") from exc
    if not math.isfinite(f) or f < 0:
        raise MalformedKlineError(f"field k.{field}={v!r} is not a finite non-negative number")
    return f


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


def candle_from_raw(value: Any) -> Candle:
    """Validate one raw-topic value and return its candle.

    Raises MalformedKlineError naming the offending field; never returns a half-parsed candle.
    """
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
    if open_time % step != 0 and interval != "1w":
        raise MalformedKlineError(f"open time {open_time} is not aligned to {interval}")
    if close_time != open_time + step - 1:
        raise MalformedKlineError(f"close time {close_time} != open time {open_time} + {interval} - 1 ms")
    o, h, low, c, v = (_num(k, f) for f in ("o", "h", "l", "c", "v"))
    assert o is not None and h is not None and low is not None and c is not None and v is not None
    if not (low <= o <= h and low <= c <= h):
        raise MalformedKlineError(f"prices out of order: o={o} h={h} l={low} c={c}")
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
        trades=_int(k, "n", optional=True),
        taker_buy_base=_num(k, "V", optional=True),
        taker_buy_quote=_num(k, "Q", optional=True),
        is_closed=closed,
        source=source,
        bars=bars,
        event_time=_int(event, "E", optional=True) or close_time,
        received_at=_int(value, "received_at", optional=True) or 0,
    )


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
                "q": None if c.quote_volume is None else repr(c.quote_volume),
                "V": None if c.taker_buy_base is None else repr(c.taker_buy_base),
                "Q": None if c.taker_buy_quote is None else repr(c.taker_buy_quote),
            },
        },
    }
    if c.bars is not None:
        value["bars"] = c.bars
    return value
