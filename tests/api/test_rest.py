"""Tier c: the REST routes on real candles that went through the real topology.

Follows the original system's validation checklist: symbol/interval match, ascending order,
include_open=false gives closed candles only, the limit cap, meta ranges, history cursors
(both -> 400, a walk returns every candle exactly once), delta overlap and repairs, gaps.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from tests.api.conftest import AUTH, LATE, MIN, N_CANDLES, OPEN_GAP, SYMBOL, Dataset, api_settings

pytestmark = pytest.mark.broker


def get(client: TestClient, path: str, **params: Any) -> Any:
    r = client.get(path, params={"symbol": SYMBOL, "interval": "1m", **params}, headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()


def opens(candles: list[dict[str, Any]]) -> list[int]:
    return [c["open_time"] for c in candles]


# --- recent -------------------------------------------------------------------------------
def test_recent_matches_the_stream_ascending_with_the_open_candle_last(
    client: TestClient, dataset: Dataset
) -> None:
    body = get(client, "/api/ohlcv/recent", limit=20)
    assert (body["symbol"], body["interval"], body["count"]) == (SYMBOL, "1m", 20)
    got = opens(body["candles"])
    assert got == sorted(got) and len(set(got)) == 20
    assert got == [c.open_time for c in dataset.closed[-19:]] + [dataset.partial.open_time]
    last = body["candles"][-1]
    assert last["is_closed"] is False and last["close"] == dataset.partial.close


def test_recent_include_open_false_gives_closed_candles_only(client: TestClient, dataset: Dataset) -> None:
    body = get(client, "/api/ohlcv/recent", limit=1000, include_open="false")
    assert all(c["is_closed"] for c in body["candles"])
    assert opens(body["candles"]) == [c.open_time for c in dataset.closed]
    by_open = {c["open_time"]: c for c in body["candles"]}
    repaired = by_open[dataset.revised.open_time]
    assert (repaired["revision"], repaired["close"]) == (1, dataset.revised.close)
    plain = by_open[dataset.closed[0].open_time]
    c0 = dataset.closed[0]
    assert (plain["open"], plain["high"], plain["low"], plain["close"], plain["volume"], plain["trades"]) == (
        c0.open,
        c0.high,
        c0.low,
        c0.close,
        c0.volume,
        c0.trades,
    )


def test_recent_lowercase_symbol_is_served_as_uppercase(client: TestClient) -> None:
    body = get(client, "/api/ohlcv/recent", symbol=SYMBOL.lower(), limit=1)
    assert body["symbol"] == SYMBOL


@pytest.mark.parametrize("limit", [0, 1001, 5000, -1])
def test_recent_limit_outside_1_to_1000_is_422_with_a_clear_message(client: TestClient, limit: int) -> None:
    r = client.get(
        "/api/ohlcv/recent", params={"symbol": SYMBOL, "interval": "1m", "limit": limit}, headers=AUTH
    )
    assert r.status_code == 422
    body = r.json()
    assert body["message"].startswith("limit: Input should be")
    assert ("1000" in body["message"]) == (limit > 1000)


# --- meta ---------------------------------------------------------------------------------
def test_meta_spans_counts_and_finds_the_open_gap(client: TestClient, dataset: Dataset) -> None:
    m = get(client, "/api/ohlcv/meta", sample_for_gap=2000)
    assert (m["earliest_open_time"], m["latest_open_time"]) == (
        dataset.closed[0].open_time,
        dataset.closed[-1].open_time,
    )
    assert m["count"] == len(dataset.closed) == N_CANDLES - len(OPEN_GAP)
    assert m["expected_bars"] == N_CANDLES
    assert (
        m["completeness_percent"] == m["completeness_ratio"] == pytest.approx(len(dataset.closed) / N_CANDLES)
    )
    assert 0 <= m["completeness_percent"] <= 1
    assert m["largest_gap_bars"] == len(OPEN_GAP)
    span = m["completeness_span"]
    assert (span["from_open_time"], span["to_open_time"], span["expected_bars"]) == (
        dataset.closed[0].open_time,
        dataset.closed[-1].open_time,
        N_CANDLES,
    )
    # the same figures over a from/to range reaching past both ends: the edge holes count
    first, last = dataset.closed[0].open_time, dataset.closed[-1].open_time
    r = get(client, "/api/ohlcv/meta", **{"from": str(first - 5 * MIN), "to": str(last + MIN)})
    assert (r["sample_for_gap"], r["sample_bars"], r["expected_bars"]) == (
        None,
        len(dataset.closed),
        N_CANDLES + 5,
    )
    assert r["largest_gap_bars"] == len(OPEN_GAP)


def test_meta_sample_after_the_gap_is_complete(client: TestClient) -> None:
    m = get(client, "/api/ohlcv/meta", sample_for_gap=N_CANDLES - OPEN_GAP[-1] - 1)  # the bars after the gap
    assert (m["completeness_ratio"], m["largest_gap_bars"], m["sample_bars"]) == (
        1.0,
        0,
        N_CANDLES - OPEN_GAP[-1] - 1,
    )
    m = get(client, "/api/ohlcv/meta", sample_for_gap=N_CANDLES - OPEN_GAP[0])  # reaches into the gap
    assert m["largest_gap_bars"] == len(OPEN_GAP)


def test_meta_of_the_resampled_interval(client: TestClient, dataset: Dataset) -> None:
    m = get(client, "/api/ohlcv/meta", interval="5m")
    assert m["earliest_open_time"] == dataset.closed[0].open_time
    assert m["largest_gap_bars"] == len(OPEN_GAP) // 5  # two whole 5m buckets are missing
    assert 0 < m["completeness_percent"] < 1


def test_meta_without_data_is_null_completeness(dataset: Dataset) -> None:
    settings = api_settings(resample_intervals=["5m", "15m"])  # 15m is served, never built
    with TestClient(dataset.app(settings=settings)) as c:
        r = c.get("/api/ohlcv/meta", params={"symbol": SYMBOL, "interval": "15m"}, headers=AUTH)
    assert r.status_code == 200
    m = r.json()
    assert (m["count"], m["completeness_percent"], m["largest_gap_bars"], m["earliest_open_time"]) == (
        0,
        None,
        0,
        None,
    )


# --- history ------------------------------------------------------------------------------
def test_history_both_cursors_is_400(client: TestClient) -> None:
    r = client.get(
        "/api/ohlcv/history",
        params={"symbol": SYMBOL, "interval": "1m", "before_open_time": 1, "after_open_time": 1},
        headers=AUTH,
    )
    assert r.status_code == 400
    assert "mutually exclusive" in r.json()["detail"]


@pytest.mark.parametrize("limit", [1, 37, 500])
def test_history_walk_backwards_returns_every_candle_exactly_once(
    client: TestClient, dataset: Dataset, limit: int
) -> None:
    seen: list[int] = []
    params: dict[str, Any] = {"limit": limit}
    pages = 0
    while True:
        body = get(client, "/api/ohlcv/history", **params)
        page = opens(body["candles"])
        assert page == sorted(page) and all(c["is_closed"] for c in body["candles"])
        assert body["next_after_open_time"] is None
        seen = page + seen
        pages += 1
        if body["next_before_open_time"] is None:
            break
        assert body["next_before_open_time"] == page[0]
        params = {"limit": limit, "before_open_time": body["next_before_open_time"]}
    assert seen == [c.open_time for c in dataset.closed]
    assert pages == -(-len(dataset.closed) // limit)


def test_history_walk_forwards_returns_every_candle_exactly_once(
    client: TestClient, dataset: Dataset
) -> None:
    seen: list[int] = []
    params: dict[str, Any] = {"limit": 64, "after_open_time": 0}
    while True:
        body = get(client, "/api/ohlcv/history", **params)
        seen += opens(body["candles"])
        assert body["next_before_open_time"] is None
        if body["next_after_open_time"] is None:
            break
        params = {"limit": 64, "after_open_time": body["next_after_open_time"]}
    assert seen == [c.open_time for c in dataset.closed]


def test_history_before_a_cursor(client: TestClient, dataset: Dataset) -> None:
    body = get(client, "/api/ohlcv/history", limit=5, before_open_time=dataset.closed[10].open_time)
    assert opens(body["candles"]) == [c.open_time for c in dataset.closed[5:10]]
    assert body["next_before_open_time"] == dataset.closed[5].open_time


# --- delta --------------------------------------------------------------------------------
def _delta_count(truncated: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "ohlcv_delta_requests_total", {"symbol": SYMBOL, "interval": "1m", "truncated": truncated}
        )
        or 0.0
    )


def test_delta_overlaps_one_interval_and_lists_repairs(client: TestClient, dataset: Dataset) -> None:
    before = _delta_count("false")
    since = dataset.closed[-5].open_time
    d = get(client, "/api/ohlcv/delta", since=since)
    assert opens(d["candles"]) == [c.open_time for c in dataset.closed if c.open_time >= since - MIN]
    assert d["candles"][0]["open_time"] == since - MIN and all(c["is_closed"] for c in d["candles"])
    assert d["truncated"] is False
    (rep,) = d["repairs"]
    assert rep["open_time"] == dataset.revised.open_time < since
    assert (rep["candle"]["revision"], rep["candle"]["close"], rep["candle"]["high"]) == (
        1,
        dataset.revised.close,
        dataset.revised.high,
    )
    assert rep["candle"]["close"] != dataset.original.close
    assert rep["repaired_at"] >= dataset.second_run_started_ms
    assert _delta_count("false") == before + 1


def test_delta_repairs_are_those_stored_since(client: TestClient, dataset: Dataset) -> None:
    d = get(client, "/api/ohlcv/delta", since=dataset.second_run_started_ms + 3_600_000)
    assert d["repairs"] == [] and d["candles"] == []


def test_delta_truncated_when_the_limit_cuts(client: TestClient, dataset: Dataset) -> None:
    before = _delta_count("true")
    d = get(client, "/api/ohlcv/delta", since=dataset.closed[0].open_time, limit=3)
    assert d["truncated"] is True
    assert opens(d["candles"]) == [c.open_time for c in dataset.closed[:3]]
    assert _delta_count("true") == before + 1


# --- gaps ---------------------------------------------------------------------------------
def test_gaps_status_shows_the_open_and_the_repaired_segment(client: TestClient, dataset: Dataset) -> None:
    base = dataset.closed[0].open_time
    g = get(client, "/api/ohlcv/gaps/status")
    assert (g["open_segments"], g["open_missing_bars"]) == (1, len(OPEN_GAP))
    repaired, still_open = g["segments"]
    assert (repaired["segment_id"], repaired["state"], repaired["missing_bars"]) == (
        base + LATE[0] * MIN,
        "repaired",
        0,
    )
    assert repaired["repaired_at"] is not None and repaired["repaired_at"] >= repaired["detected_at"]
    assert still_open["state"] == "open" and still_open["repaired_at"] is None
    assert (still_open["from_open_time"], still_open["to_open_time"], still_open["missing_bars"]) == (
        base + OPEN_GAP[0] * MIN,
        base + OPEN_GAP[-1] * MIN,
        len(OPEN_GAP),
    )
    assert (still_open["from_ts"], still_open["to_ts"], still_open["missing"]) == (
        still_open["from_open_time"],
        still_open["to_open_time"],
        still_open["missing_bars"],
    )
    only_open = get(client, "/api/ohlcv/gaps/status", state="open")
    assert [s["segment_id"] for s in only_open["segments"]] == [still_open["segment_id"]]


def test_gaps_status_shows_the_orchestrator_s_state(client: TestClient, dataset: Dataset) -> None:
    """A segment the orchestrator classified (``gap_repairs``) shows its effective state."""
    ch = dataset.client()
    sid = dataset.closed[0].open_time + OPEN_GAP[0] * MIN
    columns = ["symbol", "interval", "segment_id", "state", "attempts", "empty_answers", "rest_bars",
               "last_error", "run_id", "updated_at", "version"]  # fmt: skip

    def repair_row(state: str, version: int) -> None:
        ch.insert(
            "gap_repairs", [[SYMBOL, "1m", sid, state, 2, 2, 0, "", "r1", 0, version]], column_names=columns
        )

    repair_row("exchange_gap", 10**15)
    try:
        g = get(client, "/api/ohlcv/gaps/status")
        seg = next(s for s in g["segments"] if s["segment_id"] == sid)
        assert (seg["state"], seg["attempts"], seg["missing_bars"]) == ("exchange_gap", 2, len(OPEN_GAP))
        assert g["open_segments"] == 1  # an exchange gap still misses its bars
        assert [
            s["segment_id"] for s in get(client, "/api/ohlcv/gaps/status", state="exchange_gap")["segments"]
        ] == [sid]
        assert get(client, "/api/ohlcv/gaps/status", state="open")["segments"] == []
    finally:
        repair_row("", 10**15 + 1)  # back to the topology's state for the other tests
    assert get(client, "/api/ohlcv/gaps/status", state="open")["segments"][0]["segment_id"] == sid
