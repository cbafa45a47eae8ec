"""Prometheus metrics of the API, on the default registry (``/metrics`` shows every module's).

Names follow the original system where it had them (``ohlcv_ws_*_sent_total``,
``ohlcv_delta_requests_total``); the alert rules in ``deploy/prometheus/alerts.yml`` read
``ohlcv_api_requests_total{status=~"5.."}``. Ingestion lag, partial-close latency and gap MTTR
belong to the rooms that measure them and are not defined here.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from schemas.events import EVENT_TYPES

API_REQUESTS = Counter(
    "ohlcv_api_requests_total",
    "HTTP requests served, by route template, method and status code",
    ["route", "method", "status"],
)
API_REQUEST_SECONDS = Histogram(
    "ohlcv_api_request_seconds",
    "HTTP request duration in seconds, by route template and method",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
DELTA_REQUESTS = Counter(
    "ohlcv_delta_requests_total",
    "Delta API calls, by stream and whether the limit cut the answer",
    ["symbol", "interval", "truncated"],
)

#: one ``ohlcv_ws_<type>_sent_total`` counter per candle event type (the original names)
WS_EVENTS_SENT: dict[str, Counter] = {
    t: Counter(f"ohlcv_ws_{t}_sent_total", f"WebSocket {t} events sent to clients", ["symbol", "interval"])
    for t in (*EVENT_TYPES, "features", "news")
}
WS_SNAPSHOTS_SENT = Counter(
    "ohlcv_ws_snapshot_sent_total", "WebSocket snapshots sent to clients", ["symbol", "interval"]
)
WS_CLIENTS = Gauge("ohlcv_ws_clients", "WebSocket clients connected to this process")
WS_OVERFLOW_CLOSED = Counter(
    "ohlcv_ws_overflow_closed_total",
    "WebSocket clients closed with 4408 because their send queue overflowed",
    ["symbol", "interval"],
)
WS_RESUMES = Counter(
    "ohlcv_ws_resume_total",
    "WebSocket connections with since_seq, by outcome (replayed, or a fresh snapshot and why)",
    ["outcome"],
)
WS_GAP_FILLS = Counter(
    "ohlcv_ws_gap_fill_events_total",
    "Events a WebSocket session took from the recent-event ring or ClickHouse to close a seq gap",
    ["source"],
)
