"""Errors of the API room. Each maps to one HTTP status (see ``api.main``) and WebSocket close code."""

from __future__ import annotations

from ohlcv.errors import ClickHouseUnavailableError, OhlcvError


class ApiError(OhlcvError):
    """Root of the errors the API raises on purpose."""


class StoreUnavailableError(ClickHouseUnavailableError, ApiError):
    """ClickHouse could not answer a query (unreachable, refused, or every client busy): HTTP 503."""
