"""``/health/extended`` and gaps: what we can repair degrades health, an exchange outage does not."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient

from tests.api.conftest import AUTH, SYMBOL, Dataset, api_settings

REPAIR_COLUMNS = ["symbol", "interval", "segment_id", "state", "attempts", "empty_answers", "rest_bars",
                  "last_error", "run_id", "updated_at", "version"]  # fmt: skip


def _open_segments(dataset: Dataset) -> dict[str, int]:
    """interval -> segment id of the dataset's open gap (one 1m segment, one 5m)."""
    rows = (
        dataset.client()
        .query(
            "SELECT interval, segment_id FROM gap_segments FINAL "
            "WHERE symbol = {s:String} AND state = 'open'",
            parameters={"s": SYMBOL},
        )
        .result_rows
    )
    return {str(r[0]): int(r[1]) for r in rows}


def _set_repair_states(dataset: Dataset, states: dict[str, str]) -> None:
    """The orchestrator's state of each open segment (``""``: back to the topology's), with a
    version above any a test stored before."""
    ch = dataset.client()
    version = int(ch.query("SELECT max(version) FROM gap_repairs").result_rows[0][0] or 0) + 1
    segments = _open_segments(dataset)
    ch.insert(
        "gap_repairs",
        [
            [SYMBOL, iv, segments[iv], state, 3, 3, 0, "", "r-health", 0, version]
            for iv, state in states.items()
        ],
        column_names=REPAIR_COLUMNS,
    )


def _health(dataset: Dataset) -> dict[str, object]:
    # lag far below the threshold: the dataset was stored when the session started
    with TestClient(dataset.app(api_settings(health_max_ingestion_lag_sec=10**9))) as c:
        r = c.get("/health/extended", headers=AUTH)
    assert r.status_code == 200
    body: dict[str, object] = r.json()
    return body


def test_an_exchange_gap_is_reported_apart_and_health_stays_ok(dataset: Dataset) -> None:
    assert set(_open_segments(dataset)) == {"1m", "5m"}
    before = _health(dataset)
    checks = before["checks"]
    assert isinstance(checks, dict)
    assert (before["status"], checks["open_gaps"]["status"], checks["open_gaps"]["value"]) == (
        "degraded",
        "degraded",
        2,
    )
    assert checks["exchange_gaps"] == {
        "status": "ok",
        "value": 0,
        "unit": "segments",
        "threshold": None,
        "detail": "",
    }
    try:
        _set_repair_states(dataset, {"1m": "exchange_gap", "5m": "exchange_gap"})
        body = _health(dataset)
        checks = body["checks"]
        assert isinstance(checks, dict)
        assert body["status"] == "ok"
        assert (checks["open_gaps"]["status"], checks["open_gaps"]["value"]) == ("ok", 0)
        assert checks["exchange_gaps"] == {
            "status": "ok", "value": 2, "unit": "segments", "threshold": None,
            "detail": "12 bars Binance does not have",
        }  # fmt: skip

        # a failing repair is ours to fix: degraded, and the exchange gap beside it still apart
        _set_repair_states(dataset, {"1m": "failed", "5m": "exchange_gap"})
        body = _health(dataset)
        checks = body["checks"]
        assert isinstance(checks, dict)
        assert body["status"] == "degraded"
        assert checks["open_gaps"] == {
            "status": "degraded", "value": 1, "unit": "segments", "threshold": None,
            "detail": "10 bars missing, 1 failed to repair",
        }  # fmt: skip
        assert (checks["exchange_gaps"]["value"], checks["exchange_gaps"]["detail"]) == (
            1,
            "2 bars Binance does not have",
        )
        assert {k: v["status"] for k, v in checks.items() if k not in ("open_gaps",)} == {
            k: "ok"
            for k in ("broker", "clickhouse", "ingestion_lag", "topology_lag", "exchange_gaps", "live_events")
        }
    finally:
        _set_repair_states(dataset, {"1m": "", "5m": ""})
    assert _health(dataset)["status"] == "degraded"


def test_a_repairing_segment_still_degrades(dataset: Dataset) -> None:
    try:
        _set_repair_states(dataset, {"1m": "repairing"})
        checks = _health(dataset)["checks"]
        assert isinstance(checks, dict)
        assert (checks["open_gaps"]["status"], checks["open_gaps"]["value"]) == ("degraded", 2)
        assert checks["exchange_gaps"]["value"] == 0
    finally:
        _set_repair_states(dataset, {"1m": ""})


def test_healthz_says_starting_until_the_process_is_ready(dataset: Dataset) -> None:
    ready = threading.Event()
    with TestClient(dataset.app(ready=ready)) as c:
        r = c.get("/healthz")
        assert (r.status_code, r.json()) == (503, {"status": "starting"})
        ready.set()
        r = c.get("/healthz")
        assert (r.status_code, r.json()) == (200, {"status": "ok"})
    with TestClient(dataset.app()) as c:  # no readiness to wait for: ready when it serves
        assert c.get("/healthz").status_code == 200
