"""One pure ASGI middleware for every HTTP request: ``X-Request-ID`` and request metrics.

Pure ASGI (not ``BaseHTTPMiddleware``) so responses are not re-buffered. The route label is
the matched route's template (``/api/ohlcv/recent``), never the raw path, so the label set
stays bounded; unmatched paths count as ``unmatched``. An exception no handler caught is
logged and answered here with a JSON 500 that still carries the request id.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import orjson
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import API_REQUEST_SECONDS, API_REQUESTS

logger = logging.getLogger(__name__)

_MAX_ID = 128


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            rid: str = value.decode("latin-1").strip()
            if 0 < len(rid) <= _MAX_ID and rid.isprintable():
                return rid
    return uuid.uuid4().hex


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope)
        t0 = time.perf_counter()
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                started = True
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception(
                "unhandled error method=%s path=%s request_id=%s", scope["method"], scope["path"], rid
            )
            status = 500
            if not started:
                body = orjson.dumps({"detail": f"internal error; request id {rid}"})
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", rid.encode()),
                ]
                await send({"type": "http.response.start", "status": 500, "headers": headers})
                await send({"type": "http.response.body", "body": body})
        finally:
            route: Any = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            API_REQUESTS.labels(label, scope["method"], str(status)).inc()
            API_REQUEST_SECONDS.labels(label, scope["method"]).observe(time.perf_counter() - t0)
