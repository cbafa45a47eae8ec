"""Liveness and version (public) and ``/health/extended`` (API key): each dependency's state.

``/health/extended`` checks, each ``ok``/``degraded``/``down`` with its figure:

- ``broker``: a metadata request with a 2 s timeout (latency in ms); down when unreachable;
- ``clickhouse``: ``SELECT 1`` (latency in ms); down when unreachable;
- ``ingestion_lag``: now - newest ``ingested_at`` of closed candles of the shortest ingested
  interval (1m), over the served symbols; degraded above ``HEALTH_MAX_INGESTION_LAG_SEC`` or
  without data;
- ``topology_lag``: now - newest ``emitted_at`` in ``ohlcv_events``; same threshold;
- ``open_gaps``: gap segments still waiting for a repair (effective state open, repairing or
  failed), with how many of them failed a repair; degraded when any;
- ``exchange_gaps``: confirmed exchange outages (``exchange_gap``: Binance REST has no candles
  for the range); always ok, the count and missing bars are reported for information;
- ``live_events``: this process's Kafka fan-out (idle until the first WebSocket client).

The rule: health says whether *we* are doing our job. What we can repair and have not (open
gaps, failing repairs), falling behind (ingestion and topology lag) and our infrastructure
(broker, ClickHouse, fan-out) degrade it; a hole the exchange itself has is a fact about the
exchange, reported but never a degradation.

The answer is 200 unless a check is down, then 503 with the same body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from fastapi import APIRouter, Request, Response

import ohlcv
from api.deps import ApiKeyDep, HubDep, QueriesDep, SettingsDep
from api.errors import StoreUnavailableError
from api.fanout import EventHub
from api.models import ErrorResponse, ExtendedHealthResponse, HealthCheck, HealthStatus
from api.queries import CandleQueries
from ohlcv.settings import Settings
from schemas.intervals import interval_ms

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

_RANK: dict[HealthStatus, int] = {"ok": 0, "degraded": 1, "down": 2}


@router.get("/healthz", responses={503: {"description": "starting: not every service is published yet"}})
async def healthz(request: Request, response: Response) -> dict[str, str]:
    """Liveness and readiness: 200 ``ok`` once the process is ready for clients, 503
    ``starting`` before (``ohlcv up`` until its run file, with the broker address, is written:
    a client that starts when this says ok finds the stack's broker)."""
    ready = request.app.state.ready
    if ready is not None and not ready.is_set():
        response.status_code = 503
        return {"status": "starting"}
    return {"status": "ok"}


@router.get("/api/version")
async def version() -> dict[str, str]:
    return {"version": ohlcv.__version__}


class _QuietLog:
    """librdkafka log sink: connection refusals while probing go to DEBUG, not stderr."""

    def log(self, level: int, msg: str, *args: object) -> None:
        logger.debug(msg, *args)


def broker_check(address: str, timeout_s: float = 2.0) -> HealthCheck:
    if not address:
        return HealthCheck(status="down", detail="no broker address configured")
    admin = AdminClient(
        {"bootstrap.servers": address, "socket.connection.setup.timeout.ms": int(timeout_s * 1000),
         "logger": _QuietLog()}
    )  # fmt: skip
    t0 = time.perf_counter()
    try:
        md = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        return HealthCheck(status="down", detail=f"broker {address} unreachable: {exc}")
    ms = (time.perf_counter() - t0) * 1000
    return HealthCheck(
        status="ok", value=round(ms, 1), unit="ms", detail=f"{len(md.brokers)} broker(s) at {address}"
    )


def _lag(name: str, last_ms: int | None, now_ms: int, threshold_s: float) -> HealthCheck:
    if last_ms is None:
        return HealthCheck(status="degraded", unit="s", threshold=threshold_s, detail=f"no {name} stored yet")
    lag = max(0.0, (now_ms - last_ms) / 1000)
    return HealthCheck(
        status="ok" if lag <= threshold_s else "degraded",
        value=round(lag, 3),
        unit="s",
        threshold=threshold_s,
    )


def store_checks(queries: CandleQueries, settings: Settings, now_ms: int) -> dict[str, HealthCheck]:
    names = ("clickhouse", "ingestion_lag", "topology_lag", "open_gaps", "exchange_gaps")
    t0 = time.perf_counter()
    try:
        queries.ping()
        ping_ms = (time.perf_counter() - t0) * 1000
        live = "1m" if "1m" in settings.intervals else min(settings.intervals, key=interval_ms)
        ingested = queries.last_ingested_ms(settings.symbols, live)
        emitted = queries.last_emitted_ms(settings.symbols)
        gaps = queries.gap_counts(settings.symbols, settings.all_intervals)
    except StoreUnavailableError as exc:
        return {n: HealthCheck(status="down", detail=str(exc)) for n in names}
    threshold = settings.health_max_ingestion_lag_sec
    return {
        "clickhouse": HealthCheck(status="ok", value=round(ping_ms, 1), unit="ms"),
        "ingestion_lag": _lag(f"closed {live} candle", ingested, now_ms, threshold),
        "topology_lag": _lag("candle event", emitted, now_ms, threshold),
        "open_gaps": HealthCheck(
            status="ok" if gaps.waiting == 0 else "degraded",
            value=gaps.waiting,
            unit="segments",
            detail=_gap_detail(gaps.waiting_bars, gaps.failed) if gaps.waiting else "",
        ),
        "exchange_gaps": HealthCheck(
            status="ok",
            value=gaps.exchange,
            unit="segments",
            detail=f"{gaps.exchange_bars} bars Binance does not have" if gaps.exchange else "",
        ),
    }


def _gap_detail(missing_bars: int, failed: int) -> str:
    return f"{missing_bars} bars missing" + (f", {failed} failed to repair" if failed else "")


def live_check(hub: EventHub | None) -> HealthCheck:
    if hub is None or not hub.started:
        return HealthCheck(
            status="ok", value=0, unit="clients", detail="idle: starts with the first WebSocket client"
        )
    if not hub.ready:
        return HealthCheck(status="degraded", value=hub.subscribers, unit="clients", detail=hub.last_error)
    return HealthCheck(
        status="ok", value=hub.subscribers, unit="clients", detail=f"{hub.events_received} events"
    )


@router.get(
    "/health/extended",
    response_model=ExtendedHealthResponse,
    dependencies=[ApiKeyDep],
    responses={
        401: {"model": ErrorResponse, "description": "no API key (X-API-Key)"},
        403: {"model": ErrorResponse, "description": "wrong API key"},
        503: {"model": ExtendedHealthResponse, "description": "a check is down"},
    },
)
async def extended(
    request: Request, response: Response, settings: SettingsDep, queries: QueriesDep, hub: HubDep
) -> ExtendedHealthResponse:
    """Broker, ClickHouse, ingestion and topology lag, open gaps and the live fan-out."""
    now = int(time.time() * 1000)
    broker: str = request.app.state.broker_address
    b, stored = await asyncio.gather(
        asyncio.to_thread(broker_check, broker), asyncio.to_thread(store_checks, queries, settings, now)
    )
    checks: dict[str, Any] = {"broker": b, **stored, "live_events": live_check(hub)}
    worst: HealthStatus = max((c.status for c in checks.values()), key=lambda s: _RANK[s])
    if worst == "down":
        response.status_code = 503
    return ExtendedHealthResponse(status=worst, checked_at=now, checks=checks)
