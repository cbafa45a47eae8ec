"""Builds the FastAPI application. Routes live in api/routes/<resource>.py."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

import ohlcv
from api.routes import health
from ohlcv.settings import Settings


def create_app(settings: Settings, *, broker_address: str = "") -> FastAPI:
    app = FastAPI(
        title="OHLCV candle platform",
        version=ohlcv.__version__,
        description="Binance candles you can trust: recent, history, delta, gaps, and a live WebSocket.",
    )
    app.state.settings = settings
    app.state.broker_address = broker_address

    @app.middleware("http")
    async def request_id(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        response = await call_next(request)
        response.headers["X-Request-ID"] = rid
        return response

    app.include_router(health.router)
    return app
