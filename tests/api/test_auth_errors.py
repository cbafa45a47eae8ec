"""The API key, public routes, request ids, metrics, and the error statuses (never a 500)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from api.main import create_app
from ohlcv.infra.broker import free_port
from ohlcv.infra.clickhouse import make_client
from tests.api.conftest import AUTH, SYMBOL, Dataset, api_settings

pytestmark = pytest.mark.broker

STREAM = {"symbol": SYMBOL, "interval": "1m"}
PROTECTED = [
    ("/api/ohlcv/recent", STREAM),
    ("/api/ohlcv/meta", STREAM),
    ("/api/ohlcv/history", STREAM),
    ("/api/ohlcv/delta", {**STREAM, "since": 0}),
    ("/api/ohlcv/gaps/status", STREAM),
    ("/api/ohlcv/continuity", STREAM),
    ("/health/extended", {}),
]


@pytest.mark.parametrize(("path", "params"), PROTECTED)
def test_protected_routes_need_the_key(client: TestClient, path: str, params: dict[str, Any]) -> None:
    r = client.get(path, params=params)
    assert r.status_code == 401
    assert r.json()["detail"].startswith("API key required") and r.headers["www-authenticate"] == "ApiKey"
    r = client.get(path, params=params, headers={"X-API-Key": "dev-key"})
    assert (r.status_code, r.json()["detail"]) == (403, "API key is not valid")
    r = client.get(path, params=params, headers=AUTH)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", ["/healthz", "/api/version", "/metrics", "/docs", "/openapi.json"])
def test_public_routes_need_no_key(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["x-request-id"]


def test_every_response_carries_a_request_id(client: TestClient) -> None:
    for path, headers in (("/api/ohlcv/recent", {}), ("/nope", AUTH), ("/api/ohlcv/recent", AUTH)):
        r = client.get(path, headers=headers)
        assert len(r.headers["x-request-id"]) == 32
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"


def test_metrics_expose_the_api_and_websocket_families(client: TestClient) -> None:
    client.get("/api/ohlcv/recent", params=STREAM, headers=AUTH)
    text = client.get("/metrics").text
    for name in (
        "ohlcv_api_requests_total",
        "ohlcv_api_request_seconds_bucket",
        "ohlcv_ws_clients",
        "ohlcv_ws_partial_update_sent_total",
        "ohlcv_ws_partial_close_sent_total",
        "ohlcv_ws_append_sent_total",
        "ohlcv_ws_repair_sent_total",
        "ohlcv_ws_gap_detected_sent_total",
        "ohlcv_ws_gap_repaired_sent_total",
        "ohlcv_ws_snapshot_sent_total",
        "ohlcv_ws_overflow_closed_total",
        "ohlcv_delta_requests_total",
        "ohlcv_partial_close_latency_ms_bucket",  # another room's metric, same registry
    ):
        assert f"\n{name}" in text or f"# TYPE {name.removesuffix('_bucket')}" in text, name
    assert 'ohlcv_api_requests_total{method="GET",route="/api/ohlcv/recent",status="200"}' in text


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        (
            {"symbol": "BTCUSDT", "interval": "1m"},
            404,
            "symbol BTCUSDT is not served here; served symbols: LINKUSDT",
        ),
        ({"symbol": SYMBOL, "interval": "3m"}, 404, "interval 3m is not served for LINKUSDT"),
        ({"symbol": SYMBOL, "interval": "7x"}, 422, "interval: String should match pattern"),
        ({"symbol": "bad-sym!", "interval": "1m"}, 422, "symbol: String should match pattern"),
        ({"symbol": SYMBOL}, 422, "interval: Field required"),
        ({"symbol": SYMBOL, "interval": "1m", "limit": "ten"}, 422, "limit: Input should be a valid integer"),
        ({"symbol": SYMBOL, "interval": "1m", "include_open": "maybe"}, 422, "include_open"),
    ],
)
def test_bad_streams_and_parameters_are_4xx_naming_the_value(
    client: TestClient, params: dict[str, str], status: int, words: str
) -> None:
    r = client.get("/api/ohlcv/recent", params=params, headers=AUTH)
    assert r.status_code == status
    body = r.json()
    assert words in (body["detail"] if status == 404 else body["message"])


def test_clickhouse_down_is_503_not_500(dataset: Dataset) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    app = create_app(
        api_settings(), broker_address=dataset.broker, clickhouse_client_factory=lambda: make_client(dead)
    )
    before = (
        REGISTRY.get_sample_value(
            "ohlcv_api_requests_total", {"route": "/api/ohlcv/recent", "method": "GET", "status": "503"}
        )
        or 0.0
    )
    with TestClient(app) as c:
        r = c.get("/api/ohlcv/recent", params=STREAM, headers=AUTH)
        assert r.status_code == 503
        assert r.json()["detail"].startswith(f"CLICKHOUSE_URL={dead} is unreachable")
        h = c.get("/health/extended", headers=AUTH)
        assert h.status_code == 503
        checks = h.json()["checks"]
        assert h.json()["status"] == "down" and checks["clickhouse"]["status"] == "down"
        assert checks["broker"]["status"] == "ok"
    after = REGISTRY.get_sample_value(
        "ohlcv_api_requests_total", {"route": "/api/ohlcv/recent", "method": "GET", "status": "503"}
    )
    assert after == before + 1


def test_health_extended_reports_each_dependency(client: TestClient, dataset: Dataset) -> None:
    h = client.get("/health/extended", headers=AUTH)
    assert h.status_code == 200
    body = h.json()
    checks = body["checks"]
    assert {k: checks[k]["status"] for k in ("broker", "clickhouse", "open_gaps", "live_events")} == {
        "broker": "ok",
        "clickhouse": "ok",
        "open_gaps": "degraded",
        "live_events": "ok",
    }
    assert body["status"] == "degraded"  # the open gap
    # the 10 missing 1m bars, and the two 5m buckets they empty
    assert checks["open_gaps"]["value"] == 2 and checks["open_gaps"]["detail"] == "12 bars missing"
    assert (checks["exchange_gaps"]["status"], checks["exchange_gaps"]["value"]) == ("ok", 0)
    for lag in (checks["ingestion_lag"], checks["topology_lag"]):
        # the dataset was stored when the session started: the lag is the time since then
        assert lag["threshold"] == 120 and lag["unit"] == "s" and lag["value"] >= 0
        assert lag["status"] == ("ok" if lag["value"] <= 120 else "degraded")
    assert checks["clickhouse"]["unit"] == "ms" and checks["broker"]["value"] >= 0


def test_health_extended_without_a_broker_is_down(dataset: Dataset) -> None:
    with TestClient(create_app(api_settings(), clickhouse_client_factory=dataset.client)) as c:
        h = c.get("/health/extended", headers=AUTH)
    assert h.status_code == 503
    assert h.json()["checks"]["broker"] == {
        "status": "down",
        "value": None,
        "unit": None,
        "threshold": None,
        "detail": "no broker address configured",
    }


def test_openapi_describes_every_route_and_the_websocket_messages(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for p in (
        "/api/ohlcv/recent",
        "/api/ohlcv/meta",
        "/api/ohlcv/history",
        "/api/ohlcv/delta",
        "/api/ohlcv/gaps/status",
        "/api/ohlcv/continuity",
        "/health/extended",
        "/healthz",
        "/api/version",
        "/metrics",
    ):
        assert "get" in paths[p], p
    recent = paths["/api/ohlcv/recent"]["get"]
    assert set(recent["responses"]) >= {"200", "401", "403", "404", "422", "503"}
    assert recent["security"] == [{"APIKeyHeader": []}]
    scan = paths["/api/ohlcv/continuity"]["get"]
    assert set(scan["responses"]) >= {"200", "401", "403", "404", "422", "503"}
    assert scan["security"] == [{"APIKeyHeader": []}]
    assert {q["name"] for q in scan["parameters"]} == {"symbol", "interval", "from", "to", "limit"}
    schemas = spec["components"]["schemas"]
    assert {"CandleOut", "RecentResponse", "MetaResponse", "WsSnapshot", "CandleEvent", "Append"} <= set(
        schemas
    )
    assert "4408" in spec["info"]["description"]
