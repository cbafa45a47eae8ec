"""The fake Binance speaks Binance's protocols over real sockets, with the real data.

A test double is only worth what its fidelity is: these tests pin the wire shapes, limits and
fault behaviours the stream tests rely on.
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import time
import zipfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from fakes.binance import (
    Datasets,
    FakeBinance,
    KlineSeries,
    Playback,
    RestFault,
    candle_events,
    live_offsets,
    load_freqtrade_json,
    load_vision_zip,
)
from schemas.klines import candle_from_raw
from tests.conftest import DATA

VISION = DATA / "binance-vision" / "futures-um" / "1m"
XRP_JSON = DATA / "freqtrade" / "binance" / "XRP_USDT-1m.json"
WS_SAMPLE = DATA / "binance-ws" / "btcusdt@kline_5m.jsonl"
MIN = 60_000


def vision_csv_rows(path: Path) -> list[list[str]]:
    with zipfile.ZipFile(path) as zf:
        text = zf.read(zf.namelist()[0]).decode()
    return [r for r in csv.reader(io.StringIO(text)) if r and r[0] != "open_time"]


@pytest.fixture(scope="module")
def avax() -> KlineSeries:
    return load_vision_zip(VISION / "AVAXUSDT-1m-2026-02.zip")


@pytest.fixture(scope="module")
def xrp() -> KlineSeries:
    return load_freqtrade_json(XRP_JSON)


@pytest.fixture(scope="module")
def datasets(avax: KlineSeries, xrp: KlineSeries) -> Datasets:
    link = load_vision_zip(VISION / "LINKUSDT-1m-2026-02.zip")
    return Datasets([avax, xrp, KlineSeries(link.market, link.symbol, link.interval, link.klines[:200])])


@pytest.fixture
def fake(datasets: Datasets) -> Iterator[FakeBinance]:
    with FakeBinance(datasets, playback=Playback(speed=600, updates_per_candle=3)) as f:
        yield f


# --- data ------------------------------------------------------------------------------------


def test_vision_loader_keeps_every_row_and_string_exactly(avax: KlineSeries) -> None:
    rows = vision_csv_rows(VISION / "AVAXUSDT-1m-2026-02.zip")
    assert (avax.market, avax.symbol, avax.interval) == ("usdm", "AVAXUSDT", "1m")
    assert len(avax) == len(rows) == 40_320
    assert [k.rest_row() for k in avax.klines] == [
        [int(r[0]), *r[1:6], int(r[6]), r[7], int(r[8]), *r[9:11], "0"] for r in rows
    ]
    assert all(b - a == MIN for a, b in zip(avax.open_times, avax.open_times[1:], strict=False))


def test_freqtrade_loader_keeps_the_real_outages_and_fills_only_protocol_slots(xrp: KlineSeries) -> None:
    raw = json.loads(XRP_JSON.read_text())
    assert (xrp.market, xrp.symbol, xrp.interval, len(xrp)) == ("spot", "XRPUSDT", "1m", 61_274)
    gaps = [
        (a, (b - a) // MIN - 1)
        for a, b in zip(xrp.open_times, xrp.open_times[1:], strict=False)
        if b - a != MIN
    ]
    assert gaps == [(1618883940000, 150), (1619323260000, 283)]  # 2021-04-20 01:59, 2021-04-25 04:01
    for k, r in zip(xrp.klines, raw, strict=True):
        assert (
            k.open_time,
            float(k.open),
            float(k.high),
            float(k.low),
            float(k.close),
            float(k.volume),
        ) == tuple(r)
        assert k.close_time == k.open_time + MIN - 1
    first = xrp.klines[0]
    assert (first.open, first.volume) == ("0.57061000", "752433.30000000")  # Binance spot's 8 decimals
    # the dump has no quote volume, trades or taker volumes: the slots the protocol demands say 0
    assert {(k.quote_volume, k.trades, k.taker_buy_base, k.taker_buy_quote) for k in xrp.klines} == {
        ("0", 0, "0", "0")
    }


# --- websocket events --------------------------------------------------------------------------


def test_live_events_are_valid_klines_growing_to_the_real_candle(avax: KlineSeries) -> None:
    sample_keys = [list(e["k"]) for e in map(json.loads, WS_SAMPLE.read_text().splitlines())]
    for i in range(0, 2000, 7):
        events = candle_events(avax, i, updates=4)
        k = avax.klines[i]
        assert [e["k"]["x"] for e in events] == [False] * 4 + [True]
        assert all(list(e["k"]) == sample_keys[0] for e in events)  # Binance's field order
        candles = [candle_from_raw({"source": "ws", "received_at": 0, "event": e}) for e in events]
        final = events[-1]["k"]
        assert [final[f] for f in "tTohlcvqnVQ"] == [
            k.open_time, k.close_time, k.open, k.high, k.low, k.close, k.volume, k.quote_volume, k.trades,
            k.taker_buy_base, k.taker_buy_quote,
        ]  # fmt: skip
        for a, b in itertools.pairwise(candles):
            assert a.open == b.open and a.high <= b.high and a.low >= b.low
            assert a.volume <= b.volume and (a.trades or 0) <= (b.trades or 0)
            assert a.event_time < b.event_time <= k.close_time + 1
        for e in events:  # numbers are strings with the exchange's decimals
            assert all(isinstance(e["k"][f], str) for f in "ohlcvqVQ")
            assert len(e["k"]["c"].split(".")[1]) == len(k.close.split(".")[1])


# --- REST ------------------------------------------------------------------------------------


def get(fake: FakeBinance, market: str, **params: Any) -> httpx.Response:
    path = "/api/v3/klines" if market == "spot" else "/fapi/v1/klines"
    return httpx.get(fake.urls.rest(market) + path, params=params)


def test_rest_klines_shape_selection_and_weight_header(fake: FakeBinance, avax: KlineSeries) -> None:
    t0 = avax.open_times[100]
    r = get(fake, "usdm", symbol="AVAXUSDT", interval="1m", startTime=t0, limit=1500)
    assert r.status_code == 200
    rows = r.json()
    assert rows == [k.rest_row() for k in avax.klines[100:1600]]
    assert all(isinstance(x, str) for row in rows for x in row[1:6] + row[7:8] + row[9:12])
    assert int(r.headers["X-MBX-USED-WEIGHT-1M"]) % 10 == 0  # futures: limit 1500 weighs 10
    used = int(r.headers["X-MBX-USED-WEIGHT-1M"])
    r = get(fake, "usdm", symbol="AVAXUSDT", interval="1m", startTime=t0, endTime=t0 + 9 * MIN)
    assert [row[0] for row in r.json()] == list(avax.open_times[100:110])  # both inclusive
    assert int(r.headers["X-MBX-USED-WEIGHT-1M"]) in (used + 5, 5)  # default limit 500 weighs 5
    r = get(fake, "usdm", symbol="AVAXUSDT", interval="1m", endTime=t0, limit=3)
    assert [row[0] for row in r.json()] == list(avax.open_times[98:101])  # the last 3 up to endTime
    r = get(fake, "usdm", symbol="AVAXUSDT", interval="1m")
    assert [row[0] for row in r.json()] == list(avax.open_times[-500:])  # most recent 500
    r = get(fake, "spot", symbol="XRPUSDT", interval="1m", limit=1000)
    assert len(r.json()) == 1000
    assert r.headers["X-MBX-USED-WEIGHT-1M"] in ("2", "4", "6", "8")  # spot klines weigh 2


@pytest.mark.parametrize(
    ("market", "params", "code"),
    [
        ("usdm", {"symbol": "AVAXUSDT", "interval": "1m", "limit": 1501}, -1130),
        ("spot", {"symbol": "XRPUSDT", "interval": "1m", "limit": 1001}, -1130),
        ("usdm", {"symbol": "AVAXUSDT", "interval": "1m", "startTime": 2, "endTime": 1}, -1023),
        ("usdm", {"symbol": "DOGEUSDT", "interval": "1m"}, -1121),
        ("spot", {"symbol": "AVAXUSDT", "interval": "1m"}, -1121),  # a futures symbol on spot
        ("usdm", {"symbol": "AVAXUSDT", "interval": "7m"}, -1120),
        ("usdm", {"interval": "1m"}, -1102),
    ],
)
def test_rest_rejects_what_binance_rejects(
    fake: FakeBinance, market: str, params: dict[str, Any], code: int
) -> None:
    r = get(fake, market, **params)
    assert r.status_code == 400
    assert r.json()["code"] == code


def test_rest_weight_limit_answers_429_then_bans_a_client_that_ignores_it(datasets: Datasets) -> None:
    # an hour-long window: these five requests cannot straddle a window boundary in practice
    with FakeBinance(datasets, weight_limit={"spot": 6000, "usdm": 3}, ban_s=7, weight_window_s=3600) as fake:
        answers = []
        for _ in range(5):
            r = get(fake, "usdm", symbol="AVAXUSDT", interval="1m", limit=10)  # weight 1
            answers.append((r.status_code, r.headers["X-MBX-USED-WEIGHT-1M"], r.headers.get("Retry-After")))
        assert [(s, w) for s, w, _ in answers] == [(200, "1"), (200, "2"), (200, "3"), (429, "4"), (418, "5")]
        assert 1 <= int(answers[3][2] or 0) <= 3600  # until the window ends
        assert answers[4][2] == "7"  # asked again inside Retry-After: banned for ban_s
        assert "IP banned until" in get(fake, "usdm", symbol="AVAXUSDT", interval="1m").json()["msg"]
        assert get(fake, "spot", symbol="XRPUSDT", interval="1m").status_code == 200  # per market


def test_rest_faults_on_demand(fake: FakeBinance, avax: KlineSeries) -> None:
    fake.push_rest_fault(
        RestFault.server_error(503), RestFault.too_many_requests(retry_after_s=1),
        RestFault.empty(market="usdm"), RestFault.slow(0.3),
    )  # fmt: skip
    q = {"symbol": "AVAXUSDT", "interval": "1m", "startTime": avax.open_times[0], "limit": 5}
    r = get(fake, "usdm", **q)
    assert (r.status_code, r.json()["code"]) == (503, -1001)
    r = get(fake, "usdm", **q)
    assert (r.status_code, r.headers["Retry-After"], r.json()["code"]) == (429, "1", -1003)
    time.sleep(1.05)  # honour Retry-After
    assert get(fake, "usdm", **q).json() == []  # no data for this range
    t = time.monotonic()
    r = get(fake, "usdm", **q)
    assert time.monotonic() - t >= 0.3 and len(r.json()) == 5
    fake.push_rest_fault(RestFault.banned(retry_after_s=1))
    r = get(fake, "usdm", **q)
    assert (r.status_code, r.headers["Retry-After"]) == (418, "1")
    assert get(fake, "usdm", **q).status_code == 418  # the ban holds for Retry-After
    time.sleep(1.05)
    assert get(fake, "usdm", **q).status_code == 200
    assert [x.status for x in fake.rest_requests] == [503, 429, 200, 200, 418, 418, 200]


def test_rest_holes_and_the_in_progress_candle(
    datasets: Datasets, avax: KlineSeries, xrp: KlineSeries
) -> None:
    # the XRP dump's real outage: Binance serves fewer rows
    with FakeBinance(datasets) as fake:
        start = 1618883940000 - 9 * MIN
        rows = get(fake, "spot", symbol="XRPUSDT", interval="1m", startTime=start, limit=20).json()
        assert [r[0] for r in rows] == [start + i * MIN for i in range(10)] + [
            1618893000000 + i * MIN for i in range(10)
        ]
        fake.hide("usdm", "AVAXUSDT", "1m", avax.open_times[3], avax.open_times[5])
        rows = get(
            fake, "usdm", symbol="AVAXUSDT", interval="1m", startTime=avax.open_times[0], limit=6
        ).json()
        assert [r[0] for r in rows] == [avax.open_times[i] for i in (0, 1, 2, 6, 7, 8)]
    # shift the data so candle 1000 is the current one: nothing later is served, it is in progress
    now = int(time.time() * 1000)
    offset = now // MIN * MIN - avax.open_times[1000]
    with FakeBinance(datasets, time_offset_ms=offset) as fake:
        rows = get(
            fake, "usdm", symbol="AVAXUSDT", interval="1m", startTime=avax.open_times[995] + offset
        ).json()
        assert [r[0] - offset for r in rows] == list(avax.open_times[995:1001])
        current, final = rows[-1], avax.klines[1000]
        assert current[6] >= now  # close_time in the future
        assert Decimal(current[5]) <= Decimal(final.volume) and current[1] == final.open
        assert rows[-2] == avax.klines[999].rest_row(offset)


# --- websocket -------------------------------------------------------------------------------


async def recv_json(ws: Any, timeout_s: float = 5.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout_s))


async def test_ws_combined_streams_subscribe_list_unsubscribe(fake: FakeBinance) -> None:
    async with connect(fake.urls.usdm_ws + "/stream?streams=avaxusdt@kline_1m") as ws:
        first = await recv_json(ws)
        assert first["stream"] == "avaxusdt@kline_1m" and first["data"]["s"] == "AVAXUSDT"
        assert first["data"]["e"] == "kline" and isinstance(first["data"]["k"]["o"], str)
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["linkusdt@kline_1m"], "id": 1}))
        while (msg := await recv_json(ws)).get("id") is None:
            pass
        assert msg == {"result": None, "id": 1}
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        while (msg := await recv_json(ws)).get("id") is None:
            pass
        assert msg == {"result": ["avaxusdt@kline_1m", "linkusdt@kline_1m"], "id": 2}
        seen = {(await recv_json(ws))["stream"] for _ in range(8)}
        assert seen == {"avaxusdt@kline_1m", "linkusdt@kline_1m"}
        await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["avaxusdt@kline_1m"], "id": 3}))
        while (msg := await recv_json(ws)).get("id") is None:
            pass
        assert msg == {"result": None, "id": 3}
        assert {(await recv_json(ws))["stream"] for _ in range(6)} == {"linkusdt@kline_1m"}
        await ws.send(json.dumps({"method": "NOPE", "id": 4}))
        while (msg := await recv_json(ws)).get("id") is None:
            pass
        assert msg["error"]["code"] == 2
    # a raw stream has no envelope
    async with connect(fake.urls.usdm_ws + "/ws/avaxusdt@kline_1m") as ws:
        assert (await recv_json(ws))["e"] == "kline"


async def test_ws_is_one_market_for_every_connection(fake: FakeBinance) -> None:
    url = fake.urls.usdm_ws + "/stream?streams=avaxusdt@kline_1m"
    async with connect(url) as a, connect(url) as b:
        got_a = [await recv_json(a) for _ in range(12)]
        got_b = [await recv_json(b) for _ in range(12)]
        both_from = max(got_a[0]["data"]["E"], got_b[0]["data"]["E"])  # b may have joined later
        got_a = [m for m in got_a if m["data"]["E"] >= both_from]
        got_b = [m for m in got_b if m["data"]["E"] >= both_from]
        assert len(got_a) >= 8 and got_a[:8] == got_b[:8]


async def test_ws_limits_streams_and_incoming_messages(datasets: Datasets) -> None:
    with FakeBinance(datasets, max_streams=2, max_incoming_per_s={"spot": 5, "usdm": 3}) as fake:
        with pytest.raises(InvalidStatus) as exc:
            await connect(fake.urls.usdm_ws + "/stream?streams=a@kline_1m/b@kline_1m/c@kline_1m")
        assert exc.value.response.status_code == 400
        async with connect(fake.urls.usdm_ws + "/stream?streams=avaxusdt@kline_1m") as ws:
            await ws.send(
                json.dumps({"method": "SUBSCRIBE", "params": ["x@kline_1m", "y@kline_1m"], "id": 1})
            )
            while (msg := await recv_json(ws)).get("id") is None:
                pass
            assert msg["error"]["code"] == 2  # would be 3 streams
            for i in range(5):  # 6 control messages within a second: over the limit of 3
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 10 + i}))
            with pytest.raises(ConnectionClosed):
                while True:
                    await recv_json(ws)
            assert ws.close_code == 1008


async def test_ws_faults_drop_mid_candle_silence_malformed_and_lifetime(datasets: Datasets) -> None:
    with FakeBinance(datasets, playback=Playback(speed=300, updates_per_candle=3), lifetime_s=1.0) as fake:
        url = fake.urls.usdm_ws + "/stream?streams=avaxusdt@kline_1m"
        async with connect(url) as ws:
            await recv_json(ws)
            await asyncio.to_thread(fake.drop_connections, mid_candle=True)
            last = None
            with pytest.raises(ConnectionClosedError):  # no close frame: 1006
                while True:
                    last = await recv_json(ws)
            drop = fake.drops[-1]
            assert last is not None and last["data"]["k"]["x"] is False
            assert drop.open_time == last["data"]["k"]["t"] and drop.stream == "avaxusdt@kline_1m"
        async with connect(url) as ws:
            await recv_json(ws)
            await asyncio.to_thread(fake.go_silent)
            with pytest.raises(TimeoutError):
                while True:
                    await recv_json(ws, timeout_s=0.5)
            pong = await ws.ping()
            await asyncio.wait_for(pong, 1)  # silent, not dead: pings are still answered
        async with connect(url) as ws:
            await asyncio.to_thread(fake.send_frames, ["not json", b"\x00binary"])
            frames = []
            with pytest.raises(ConnectionClosed):  # the server's 24 h cut, shortened to 1 s
                while True:
                    frames.append(await asyncio.wait_for(ws.recv(), 3))
            assert "not json" in frames and b"\x00binary" in frames
            assert ws.close_code == 1001


async def test_live_mode_plays_todays_market(datasets: Datasets) -> None:
    now = int(time.time() * 1000)
    offsets = live_offsets(datasets, now)
    assert set(offsets) == {"spot", "usdm"} and all(o % 86_400_000 == 0 for o in offsets.values())
    playback = Playback(speed=1, updates_per_candle=59, live=True)  # an update a second
    with FakeBinance(datasets, playback=playback, time_offset_ms=offsets) as fake:
        async with connect(fake.urls.usdm_ws + "/stream?streams=avaxusdt@kline_1m") as ws:
            event = (await recv_json(ws, timeout_s=3))["data"]
        received = time.time() * 1000
        assert abs(event["E"] - received) < 1500 and event["k"]["t"] <= event["E"] <= event["k"]["T"] + 1
        # the current minute's candle, or the one that closed at the boundary the event landed on
        assert int(received) // MIN * MIN - event["k"]["t"] in (0, MIN)
        rows = get(fake, "spot", symbol="XRPUSDT", interval="1m", limit=2).json()
        assert rows[-1][0] <= received <= rows[-1][6]  # the current spot candle, in progress
