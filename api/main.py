"""Builds the FastAPI application. Routes live in api/routes/<resource>.py.

Public: ``/healthz``, ``/api/version``, ``/metrics``, ``/docs``, ``/openapi.json``. Everything
under ``/api/ohlcv/``, ``/api/features/``, ``/ws/ohlcv`` and ``/health/extended`` needs the API key.

Statuses: 400 contradictory parameters (both history cursors; meta's sample_for_gap with
from/to); 401 no API key; 403 wrong key; 404 a symbol or interval this deployment does not serve
(the message names it); 422 a malformed parameter (``detail`` as FastAPI, plus one-line
``message``; also a from/to range that cannot be scanned); 503 ClickHouse unavailable. A 500
is a bug; it still answers JSON with the request id. WebSocket close codes: ``api.streaming``.

Nothing connects at import or in ``create_app``: the lifespan opens the ClickHouse client pool
(``make_client(settings.clickhouse_dsn)`` unless a factory is given) and creates the live event
hub, whose Kafka consumer starts with the first WebSocket client.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import uvicorn
from clickhouse_connect.driver.client import Client
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter

import ohlcv
from api.coalesce import Coalescer
from api.errors import StoreUnavailableError
from api.fanout import EventHub, parse_feature_row, parse_news_article
from api.feature_queries import FeatureQueries
from api.middleware import RequestContextMiddleware
from api.models import WsSnapshot
from api.queries import CandleQueries, ClientPool
from api.recent_book import RecentBooks
from api.routes import features, health, metrics, models, monitoring, news, risk, ws
from api.routes import ohlcv as ohlcv_routes
from api.routes.console import mount_console
from ohlcv.errors import ClickHouseUnavailableError
from ohlcv.infra.broker import EMBEDDED_CONSUMER_CONFIG
from ohlcv.infra.clickhouse import make_client
from ohlcv.settings import Settings
from schemas.events import CandleEvent
from schemas.topics import CANDLE_EVENTS, FEATURES, NEWS_ARTICLES

logger = logging.getLogger(__name__)

DESCRIPTION = """Binance candles you can trust: recent, history, delta, continuity, gaps, their rolling
features (latest, history, drift), and a live WebSocket.

Times are ms since epoch (UTC); the `from`/`to` of `meta` and `continuity` also take ISO 8601
(`2021-03-01`, `2021-03-01T12:00`, UTC unless an offset is given). Send the API key in `X-API-Key`.

**WebSocket `/ws/ohlcv?symbol=&interval=[&since_seq=][&limit=][&api_key=]`**: first a
`WsSnapshot` (recent closed candles and `seq`, the last event it includes), then every
`CandleEvent` with a higher seq, in order, exactly once. Reconnect with `since_seq` = the last
seq applied to get exactly the events after it (or a fresh snapshot with a `reason` when they
are no longer stored). Close codes: 4401 no key, 4403 wrong key or stream not served, 4422
malformed parameter, 4408 the client read too slowly (resume with since_seq), 1013 try again
later (ClickHouse unavailable, or missed events not stored in time; resume with since_seq).
"""


def create_app(
    settings: Settings,
    *,
    broker_address: str = "",
    clickhouse_client_factory: Callable[[], Client] | None = None,
    events_topic: str = CANDLE_EVENTS.name,
    features_topic: str = FEATURES.name,
    news_topic: str = NEWS_ARTICLES.name,
    ws_queue_max: int = 1024,
    clickhouse_pool_size: int = 4,
    ready: threading.Event | None = None,
) -> FastAPI:
    """The API app.

    ``ready``: set by the process once everything a client needs is published (``ohlcv up``:
    the run file with the broker address); until then ``/healthz`` answers 503 "starting".
    None (a process that serves the API alone): ready as soon as it serves.

    ``ws_queue_max`` bounds each WebSocket client's send queue (overflow: close 4408); keep it
    above the fan-out's batch (``api.fanout._BATCH`` = 256 events handed over at once).
    """
    factory = clickhouse_client_factory or functools.partial(make_client, settings.clickhouse_dsn)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = ClientPool(factory, size=clickhouse_pool_size)
        await anyio.to_thread.run_sync(pool.warm)
        consumer_config: dict[str, Any] = dict(EMBEDDED_CONSUMER_CONFIG) if settings.embedded_broker else {}
        hub = EventHub(broker_address, events_topic, consumer_config=consumer_config)
        # feature rows for clients that ask for them (``/ws/ohlcv?...&features=true``)
        app.state.feature_hub = feature_hub = EventHub(
            broker_address, features_topic, consumer_config=consumer_config, parse=parse_feature_row
        )
        # news stories for clients that ask for them (``&news=true`` or ``&news=all``)
        app.state.news_hub = news_hub = EventHub(
            broker_address, news_topic, consumer_config=consumer_config, parse=parse_news_article
        )
        queries = app.state.queries = CandleQueries(pool)
        app.state.feature_queries = FeatureQueries(pool)
        app.state.reads = Coalescer()
        app.state.hub = hub
        app.state.books = (
            RecentBooks(hub, queries.book_seed, queries.max_seq)
            if settings.api_recent_book and broker_address
            else None
        )
        try:
            yield
        finally:
            await hub.stop()
            await feature_hub.stop()
            await news_hub.stop()
            await anyio.to_thread.run_sync(pool.close)

    app = FastAPI(
        title="OHLCV candle platform", version=ohlcv.__version__, description=DESCRIPTION, lifespan=lifespan
    )
    app.state.settings = settings
    app.state.broker_address = broker_address
    app.state.ws_queue_max = ws_queue_max
    app.state.ready = ready
    app.add_middleware(RequestContextMiddleware)
    app.add_exception_handler(ClickHouseUnavailableError, _store_unavailable)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(ohlcv_routes.router)
    app.include_router(features.router)
    app.include_router(monitoring.router)
    app.include_router(news.router)
    app.include_router(risk.router)
    app.include_router(models.router)
    app.include_router(ws.router)
    mount_console(app)
    app.openapi = functools.partial(_openapi, app)  # type: ignore[method-assign]
    return app


def server_config(app: FastAPI, settings: Settings, *, port: int | None = None,
                  log_level: str = "warning") -> uvicorn.Config:  # fmt: skip
    """How every process serves the API: uvicorn on API_HOST (and ``port``, default API_PORT),
    WebSocket compression per API_WS_DEFLATE."""
    return uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port if port is None else port,
        log_level=log_level,
        lifespan="on",
        ws_per_message_deflate=settings.api_ws_deflate,
    )


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("503 path=%s: %s", request.url.path, exc)
    detail = str(exc) if isinstance(exc, StoreUnavailableError) else f"ClickHouse is unavailable: {exc}"
    return JSONResponse({"detail": detail}, status_code=503)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    parts = []
    for e in errors:
        loc = ".".join(str(p) for p in e.get("loc", ())[1:]) or "request"
        given = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""
        parts.append(f"{loc}: {e.get('msg', 'invalid')}{given}")
    return JSONResponse({"detail": jsonable_encoder(errors), "message": "; ".join(parts)}, status_code=422)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated schema, plus the WebSocket messages (``WsSnapshot``, ``CandleEvent``) as components."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    ref = "#/components/schemas/{model}"
    for name, adapter in (("WsSnapshot", TypeAdapter(WsSnapshot)), ("CandleEvent", TypeAdapter(CandleEvent))):
        js = adapter.json_schema(ref_template=ref, mode="serialization")
        for dname, d in js.pop("$defs", {}).items():
            components.setdefault(dname, d)
        components.setdefault(name, js)
    app.openapi_schema = schema
    return schema
