"""Route dependencies as ``Annotated`` aliases: settings, queries, the live hub, the API key,
the served (symbol, interval) of a request, and the from/to range of a continuity scan."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader

from api.coalesce import Coalescer
from api.errors import StoreUnavailableError
from api.fanout import EventHub
from api.queries import CandleQueries, Stream
from api.recent_book import RecentBooks
from ohlcv.settings import Settings
from schemas.intervals import BINANCE_INTERVALS, interval_ms
from streams.continuity import ScanRangeError, parse_time_ms, scan_window

SYMBOL_PATTERN = r"^[A-Za-z0-9]{2,30}$"
INTERVAL_PATTERN = "^(" + "|".join(BINANCE_INTERVALS) + ")$"

api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="The API key (API_KEY). Missing: 401; wrong: 403. The WebSocket also takes ?api_key=.",
)


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_queries(request: Request) -> CandleQueries:
    queries: CandleQueries | None = getattr(request.app.state, "queries", None)
    if queries is None:
        raise StoreUnavailableError("the API has not started: its lifespan did not run")
    return queries


async def get_reads(request: Request) -> Coalescer:
    reads: Coalescer = request.app.state.reads
    return reads


async def get_hub(request: Request) -> EventHub | None:
    hub: EventHub | None = getattr(request.app.state, "hub", None)
    return hub


SettingsDep = Annotated[Settings, Depends(get_settings)]
QueriesDep = Annotated[CandleQueries, Depends(get_queries)]


async def get_books(request: Request) -> RecentBooks | None:
    books: RecentBooks | None = getattr(request.app.state, "books", None)
    return books


HubDep = Annotated[EventHub | None, Depends(get_hub)]
BooksDep = Annotated[RecentBooks | None, Depends(get_books)]
ReadsDep = Annotated[Coalescer, Depends(get_reads)]


def key_matches(given: str, settings: Settings) -> bool:
    """Constant-time comparison with the configured key."""
    return hmac.compare_digest(given.encode(), settings.api_key.get_secret_value().encode())


async def require_api_key(
    settings: SettingsDep, key: Annotated[str | None, Security(api_key_header)]
) -> None:
    if not key:
        raise HTTPException(
            401, "API key required: send it in the X-API-Key header", headers={"WWW-Authenticate": "ApiKey"}
        )
    if not key_matches(key, settings):
        raise HTTPException(403, "API key is not valid")


async def served_stream(
    settings: SettingsDep,
    symbol: Annotated[
        str,
        Query(pattern=SYMBOL_PATTERN, description="Binance symbol, case-insensitive", examples=["XRPUSDT"]),
    ],
    interval: Annotated[
        str, Query(pattern=INTERVAL_PATTERN, description="Binance interval", examples=["1m"])
    ],
) -> Stream:
    """The requested stream if this deployment serves it; 404 naming what is not served."""
    return served_stream_of(settings, symbol, interval)


def served_stream_of(settings: Settings, symbol: str, interval: str) -> Stream:
    """``served_stream`` for a symbol and interval from a request body."""
    sym = symbol.upper()
    if sym not in settings.symbols:
        raise HTTPException(
            404, f"symbol {sym} is not served here; served symbols: {', '.join(settings.symbols)}"
        )
    if interval not in settings.all_intervals:
        served = ", ".join(settings.all_intervals)
        raise HTTPException(404, f"interval {interval} is not served for {sym}; served intervals: {served}")
    return Stream(sym, interval, interval_ms(interval))


ApiKeyDep = Depends(require_api_key)
StreamDep = Annotated[Stream, Depends(served_stream)]


@dataclass(frozen=True, slots=True)
class ScanRange:
    """``[start_ms, end_ms)`` of a scan (None: the stored edge), checked against ``now_ms``."""

    start_ms: int | None
    end_ms: int | None
    now_ms: int

    @property
    def given(self) -> bool:
        return self.start_ms is not None or self.end_ms is not None


def _invalid(field: str, message: str, given: Any) -> RequestValidationError:
    """A 422 in FastAPI's own shape, naming the query parameter (the app adds the one-line message)."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", field), "msg": message, "input": given}]
    )


_TIME_HELP = "ms since epoch, or ISO 8601 UTC (2021-03-01, 2021-03-01T12:00, an offset or Z)"


async def scan_range(
    st: StreamDep,
    start: Annotated[
        str | None,
        Query(
            alias="from",
            max_length=40,
            description=f"bars opening at or after this; {_TIME_HELP}. Absent: from the first stored candle",
        ),
    ] = None,
    end: Annotated[
        str | None,
        Query(
            alias="to",
            max_length=40,
            description=f"bars opening before this (exclusive); {_TIME_HELP}. "
            "Absent: to the last stored candle",
        ),
    ] = None,
) -> ScanRange:
    """The from/to of the request; 422 naming the parameter when a bound is malformed, from is
    not before to, or from opens more than ``MAX_SCAN_BARS`` bars before the span's end."""
    bounds: dict[str, int | None] = {}
    for field, text in (("from", start), ("to", end)):
        try:
            bounds[field] = None if text is None else parse_time_ms(text)
        except ValueError as exc:
            raise _invalid(field, str(exc), text) from exc
    now = int(time.time() * 1000)
    try:
        scan_window(st.interval, days=None, start_ms=bounds["from"], end_ms=bounds["to"], now_ms=now)
    except ScanRangeError as exc:
        raise _invalid(exc.field, exc.reason, start if exc.field == "from" else end) from exc
    return ScanRange(bounds["from"], bounds["to"], now)


ScanRangeDep = Annotated[ScanRange, Depends(scan_range)]


def one_cursor(before: int | None, after: int | None) -> None:
    """History paging takes at most one cursor: both are a 400."""
    if before is not None and after is not None:
        raise HTTPException(
            400, "before_open_time and after_open_time are mutually exclusive: pass one cursor"
        )


def next_cursors(items: list[dict[str, Any]], more: bool, forward: bool) -> dict[str, int | None]:
    """The ``next_before_open_time``/``next_after_open_time`` of a history page (ascending
    ``items``; ``more``: items exist beyond it in the paging direction)."""
    return {
        "next_before_open_time": items[0]["open_time"] if items and more and not forward else None,
        "next_after_open_time": items[-1]["open_time"] if items and more and forward else None,
    }
