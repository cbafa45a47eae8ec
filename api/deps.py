"""Route dependencies as ``Annotated`` aliases: settings, queries, the live hub, the API key,
and the served (symbol, interval) of a request."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, Security
from fastapi.security import APIKeyHeader

from api.coalesce import Coalescer
from api.errors import StoreUnavailableError
from api.fanout import EventHub
from api.queries import CandleQueries, Stream
from api.recent_book import RecentBooks
from ohlcv.settings import Settings
from schemas.intervals import BINANCE_INTERVALS, interval_ms

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
