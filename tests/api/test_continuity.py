"""Tier b: ``/api/ohlcv/continuity`` and ``/api/ohlcv/meta`` with from/to, on the real XRP/USDT dump
(Apr-May 2021) bulk-loaded into a fresh chDB database: its two real outages, 150 bars after
2021-04-20 01:59 and 283 bars after 2021-04-25 04:01, years before "now"."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from ohlcv.infra.clickhouse import make_client, migrate
from sinks.clickhouse_bulk import load_files
from tests.api.conftest import AUTH, api_settings
from tests.streams.test_continuity import (
    MIN,
    OUT1,
    OUT2,
    XRP_EXPECTED,
    XRP_FIRST,
    XRP_JSON,
    XRP_LAST,
    XRP_PRESENT,
)

#: 2021-04-20 00:00 UTC .. 2021-04-21 00:00 UTC: the day of the first outage
DAY_FROM, DAY_TO = 1618876800000, 1618963200000


@pytest.fixture(scope="module")
def api(chdb_path: str) -> Iterator[TestClient]:
    url, db = f"chdb://{chdb_path}", f"t_cont_{uuid.uuid4().hex[:10]}"
    ch = make_client(url, db)
    migrate(ch)
    assert load_files(ch, [XRP_JSON]).inserted == XRP_PRESENT
    settings = api_settings(symbols=["XRPUSDT"])
    with TestClient(create_app(settings, clickhouse_client_factory=lambda: make_client(url, db))) as c:
        yield c
    ch.command(f"DROP DATABASE IF EXISTS `{db}`")
    ch.close()


def get(api: TestClient, path: str, status: int = 200, **params: Any) -> Any:
    r = api.get(path, params={"symbol": "XRPUSDT", "interval": "1m", **params}, headers=AUTH)
    assert r.status_code == status, r.text
    return r.json()


def gap(a: int, b: int, n: int) -> dict[str, int]:
    return {"from_open_time": a, "to_open_time": b, "missing_bars": n}


OUTAGE_1, OUTAGE_2 = (
    gap(OUT1.from_open_time, OUT1.to_open_time, 150),
    gap(OUT2.from_open_time, OUT2.to_open_time, 283),
)


def test_without_bounds_the_whole_stored_span_is_scanned(api: TestClient) -> None:
    body = get(api, "/api/ohlcv/continuity")
    assert body == {
        "symbol": "XRPUSDT", "interval": "1m",
        "span": {
            "from_open_time": XRP_FIRST, "to_open_time": XRP_LAST, "from_iso": "2021-04-02T00:00:00Z",
            "to_iso": "2021-05-14T20:26:00Z", "from_given": False, "to_given": False,
            "expected_bars": XRP_EXPECTED,
        },
        "expected_bars": XRP_EXPECTED, "present_bars": XRP_PRESENT, "missing_bars": 433,
        "completeness_ratio": XRP_PRESENT / XRP_EXPECTED, "completeness_percent": XRP_PRESENT / XRP_EXPECTED,
        "gap_count": 2, "gaps": [OUTAGE_1, OUTAGE_2], "gaps_truncated": False, "largest_gap_bars": 283,
        "first_open_time": XRP_FIRST, "last_open_time": XRP_LAST,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2021-04-20", "2021-04-21"),
        (str(DAY_FROM), str(DAY_TO)),
        ("2021-04-20T02:00+02:00", "2021-04-21T00:00Z"),
    ],
)
def test_a_day_in_iso_or_epoch_ms(api: TestClient, start: str, end: str) -> None:
    body = get(api, "/api/ohlcv/continuity", **{"from": start, "to": end})
    assert (body["expected_bars"], body["present_bars"], body["missing_bars"]) == (1440, 1290, 150)
    assert (body["gaps"], body["gap_count"], body["largest_gap_bars"]) == ([OUTAGE_1], 1, 150)
    assert body["completeness_ratio"] == 1290 / 1440
    assert body["span"] == {
        "from_open_time": DAY_FROM, "to_open_time": DAY_TO - MIN, "from_iso": "2021-04-20T00:00:00Z",
        "to_iso": "2021-04-20T23:59:00Z", "from_given": True, "to_given": True, "expected_bars": 1440,
    }  # fmt: skip


def test_given_bounds_count_the_holes_at_the_edges_and_the_list_is_bounded(api: TestClient) -> None:
    # ten bars before the dump and five after it (closed long ago)
    edges = {"from": str(XRP_FIRST - 10 * MIN), "to": str(XRP_LAST + 6 * MIN)}
    body = get(api, "/api/ohlcv/continuity", **edges)
    before, after = gap(XRP_FIRST - 10 * MIN, XRP_FIRST - MIN, 10), gap(XRP_LAST + MIN, XRP_LAST + 5 * MIN, 5)
    assert body["gaps"] == [before, OUTAGE_1, OUTAGE_2, after]
    assert (body["expected_bars"], body["missing_bars"], body["gap_count"]) == (XRP_EXPECTED + 15, 448, 4)
    cut = get(api, "/api/ohlcv/continuity", limit=2, **edges)
    assert (cut["gaps"], cut["gap_count"], cut["gaps_truncated"], cut["missing_bars"]) == (
        [before, OUTAGE_1], 4, True, 448,
    )  # fmt: skip
    # one bound: the other edge is the stored one
    since = get(api, "/api/ohlcv/continuity", **{"from": "2021-04-25"})
    assert (since["span"]["to_open_time"], since["span"]["to_given"], since["gaps"]) == (
        XRP_LAST,
        False,
        [OUTAGE_2],
    )
    until = get(api, "/api/ohlcv/continuity", to="2021-04-25")
    assert (until["span"]["from_open_time"], until["span"]["from_given"], until["gaps"]) == (
        XRP_FIRST, False, [OUTAGE_1],
    )  # fmt: skip
    assert until["expected_bars"] == (1619308800000 - XRP_FIRST) // MIN


def test_a_stream_with_nothing_stored_expects_nothing(api: TestClient) -> None:
    body = get(api, "/api/ohlcv/continuity", interval="5m")
    assert (body["expected_bars"], body["completeness_ratio"], body["gaps"]) == (0, None, [])
    assert body["span"]["from_open_time"] is None and body["span"]["from_iso"] is None
    # both bounds given: every bar of the range is one hole
    both = get(api, "/api/ohlcv/continuity", interval="5m", **{"from": "2021-04-20", "to": "2021-04-21"})
    assert (both["expected_bars"], both["present_bars"], both["completeness_ratio"]) == (288, 0, 0.0)
    assert both["gaps"] == [gap(DAY_FROM, DAY_TO - 5 * MIN, 288)]


@pytest.mark.parametrize(
    ("params", "field", "says"),
    [
        ({"from": "2021-05-01", "to": "2021-04-01"}, "from",
         "from: 2021-05-01T00:00:00Z is not before to (2021-04-01T00:00:00Z): the window would be empty"),
        ({"from": "2021-04-20", "to": "2021-04-20T00:00"}, "from", "is not before to"),
        ({"from": "1990-01-01"}, "from",
         "bars of 1m, more than the 10,512,000 (20 years of 1m) one scan covers"),
        ({"from": "yesterday"}, "from", "from: 'yesterday' is neither epoch ms nor an ISO date/time"),
        ({"to": "2021-02-30"}, "to", "to: '2021-02-30' is neither epoch ms nor an ISO date/time"),
        ({"to": "1617321600"}, "to", "epoch seconds? give milliseconds (1617321600000)"),
        ({"to": "2400-01-01"}, "to", "after 2299-12-31"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("path", ["/api/ohlcv/continuity", "/api/ohlcv/meta"])
def test_bad_ranges_are_422_naming_the_parameter(
    api: TestClient, path: str, params: dict[str, str], field: str, says: str
) -> None:
    body = get(api, path, 422, **params)
    assert [e["loc"] for e in body["detail"]] == [["query", field]]
    assert body["message"].startswith(f"{field}: ") and says in body["message"]


def test_streams_and_keys_are_checked_as_on_the_other_routes(api: TestClient) -> None:
    r = api.get("/api/ohlcv/continuity", params={"symbol": "BTCUSDT", "interval": "1m"}, headers=AUTH)
    assert r.status_code == 404 and r.json()["detail"].startswith("symbol BTCUSDT is not served here")
    r = api.get("/api/ohlcv/continuity", params={"symbol": "XRPUSDT", "interval": "1h"}, headers=AUTH)
    assert r.status_code == 404 and r.json()["detail"].startswith("interval 1h is not served for XRPUSDT")
    assert api.get("/api/ohlcv/continuity", params={"symbol": "XRPUSDT", "interval": "1m"}).status_code == 401
    body = get(api, "/api/ohlcv/continuity", 422, limit=0)
    assert body["message"].startswith("limit: Input should be greater than or equal to 1")


def test_meta_says_which_span_its_completeness_covers(api: TestClient) -> None:
    sample = get(api, "/api/ohlcv/meta")  # the newest 2000 candles: after both outages
    assert (sample["sample_for_gap"], sample["sample_bars"], sample["completeness_ratio"]) == (
        2000,
        2000,
        1.0,
    )
    assert sample["completeness_span"] == {
        "from_open_time": XRP_LAST - 1999 * MIN, "to_open_time": XRP_LAST, "from_iso": "2021-05-13T11:07:00Z",
        "to_iso": "2021-05-14T20:26:00Z", "from_given": False, "to_given": False, "expected_bars": 2000,
    }  # fmt: skip
    day = get(api, "/api/ohlcv/meta", **{"from": "2021-04-20", "to": "2021-04-21"})
    assert (day["earliest_open_time"], day["latest_open_time"], day["count"]) == (
        XRP_FIRST,
        XRP_LAST,
        XRP_PRESENT,
    )
    assert (day["sample_for_gap"], day["sample_bars"], day["expected_bars"], day["largest_gap_bars"]) == (
        None, 1290, 1440, 150,
    )  # fmt: skip
    assert day["completeness_percent"] == day["completeness_ratio"] == 1290 / 1440
    assert (day["completeness_span"]["from_iso"], day["completeness_span"]["to_iso"]) == (
        "2021-04-20T00:00:00Z", "2021-04-20T23:59:00Z",
    )  # fmt: skip
    since = get(api, "/api/ohlcv/meta", **{"from": "2021-04-02"})  # to: the last stored candle
    assert (since["sample_bars"], since["expected_bars"], since["largest_gap_bars"]) == (
        XRP_PRESENT, XRP_EXPECTED, 283,
    )  # fmt: skip
    r = api.get("/api/ohlcv/meta", params={"symbol": "XRPUSDT", "interval": "1m", "sample_for_gap": 10,
                                           "from": "2021-04-20"}, headers=AUTH)  # fmt: skip
    assert r.status_code == 400
    assert r.json()["detail"] == "sample_for_gap and from/to are mutually exclusive: pass one of them"
