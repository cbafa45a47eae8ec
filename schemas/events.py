"""Candle events: the contract of ``ohlcv.candle.events`` and of the WebSocket.

Every event carries ``symbol``, ``interval`` and ``seq``: a per-(symbol, interval) sequence that
increases by exactly one per event, so a consumer can detect loss and resume. ``emitted_at`` is
the topology's wall clock in ms.

The pydantic models are the documented, exported contract (JSON Schema for downstream consumers,
OpenAPI for the API). The topology builds the same shapes as plain dicts on its hot path;
``tests/schemas`` validates those dicts against these models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from schemas.klines import Candle

EVENT_TYPES: tuple[str, ...] = (
    "partial_update",
    "partial_close",
    "append",
    "repair",
    "gap_detected",
    "gap_repaired",
)


class CandleOut(BaseModel):
    """A candle as consumers see it (API, WebSocket, events). Times are ms since epoch, UTC."""

    model_config = ConfigDict(frozen=True)

    open_time: int
    close_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float | None = None
    trades: int | None = None
    taker_buy_base: float | None = None
    taker_buy_quote: float | None = None
    is_closed: bool
    source: str = "ws"
    revision: int = 0
    bars: int | None = Field(default=None, description="1m bars a resampled candle was built from")


def candle_out(c: Candle, revision: int = 0) -> dict[str, object]:
    """The CandleOut shape of a candle, as a plain dict (hot path)."""
    return {
        "open_time": c.open_time,
        "close_time": c.close_time,
        "open": c.open,
        "high": c.high,
        "low": c.low,
        "close": c.close,
        "volume": c.volume,
        "quote_volume": c.quote_volume,
        "trades": c.trades,
        "taker_buy_base": c.taker_buy_base,
        "taker_buy_quote": c.taker_buy_quote,
        "is_closed": c.is_closed,
        "source": c.source,
        "revision": revision,
        "bars": c.bars,
    }


def output_json(out: dict[str, Any]) -> bytes:
    """The JSON a topology output is published as: the output without its ``kind`` (the
    events topic and the ``ohlcv_events`` payload carry these very bytes)."""
    return orjson.dumps({k: v for k, v in out.items() if k != "kind"})


def stored_candles(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The candles an event writes into ``ohlcv_candles`` (a ``partial_close``'s candle is
    written by the ``append`` that follows it)."""
    etype = event.get("type")
    if etype == "append":
        return list(event["candles"])
    if etype in ("partial_update", "repair"):
        return [event["candle"]]
    return []


def candle_version(c: dict[str, Any]) -> int:
    """The ReplacingMergeTree version of a candle row (CandleOut dict): a later revision wins,
    and a closed candle wins over its in-progress rows."""
    return int(c.get("revision") or 0) * 2 + int(bool(c["is_closed"]))


class _Event(BaseModel):
    symbol: str
    interval: str
    seq: int = Field(ge=1, description="per (symbol, interval), +1 per event")
    emitted_at: int = Field(description="ms since epoch when the topology emitted it")


class PartialUpdate(_Event):
    """An in-progress candle changed (Binance ``x:false``)."""

    type: Literal["partial_update"] = "partial_update"
    candle: CandleOut


class PartialClose(_Event):
    """A candle closed (Binance ``x:true``); followed by an ``append`` of the same candle."""

    type: Literal["partial_close"] = "partial_close"
    candle: CandleOut
    latency_ms: int = Field(description="processing time minus the candle's close time")


class Append(_Event):
    """Newly closed candles, ascending by open_time (the original system's shape)."""

    type: Literal["append"] = "append"
    count: int
    candles: list[CandleOut]
    late: bool = Field(default=False, description="fills a slot older than the last closed one")


class Repair(_Event):
    """A closed candle we already had arrived again with different values."""

    type: Literal["repair"] = "repair"
    candle: CandleOut
    revision: int = Field(ge=1)
    source: str
    previous: CandleOut | None = None


class GapDetected(_Event):
    """Closed candles are missing between the last closed one and the one that just arrived."""

    type: Literal["gap_detected"] = "gap_detected"
    segment_id: int = Field(description="open time of the first missing bar; identifies the segment")
    from_open_time: int
    to_open_time: int
    missing_bars: int = Field(ge=1)


class GapRepaired(_Event):
    """Every missing bar of a gap segment is now present."""

    type: Literal["gap_repaired"] = "gap_repaired"
    segment_id: int = Field(description="open time of the segment's first missing bar at detection")
    from_open_time: int
    to_open_time: int
    missing_bars: int
    detected_at: int | None = None
    repaired_at: int


CandleEvent = Annotated[
    PartialUpdate | PartialClose | Append | Repair | GapDetected | GapRepaired,
    Field(discriminator="type"),
]


class DeadLetter(BaseModel):
    """A record no room could use, with why and where it came from."""

    reason: str
    source: str = Field(description="topic[partition]@offset, or file:line")
    stage: str = Field(description="which step refused it")
    payload: str = Field(description="the original bytes, decoded as UTF-8 with replacement")
    at: int = Field(description="ms since epoch")
    key: str | None = Field(default=None, description="the refused record's message key, when it had one")
