"""Tier c: ``/ws/ohlcv`` against a real uvicorn server, with the real topology producing events.

The topology runs in the main thread (Quix signal handlers); the server and the clients run in
threads. Live klines are produced, paced, while the topology runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from clickhouse_connect.driver.client import Client
from prometheus_client import REGISTRY

from api.main import create_app
from ohlcv.infra.clickhouse import make_client
from tests.api.conftest import API_KEY, AUTH, SYMBOL, Dataset, api_settings
from tests.api.harness import ApiServer, PacedProducer, in_thread, max_seq, stored_types
from tests.topologies.helpers import vision_candles
from tests.topologies.pipeline import produce, run_topology, unique_topics

pytestmark = pytest.mark.broker


@dataclass
class Received:
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    resumed_first: dict[str, Any] | None = None

    @property
    def seqs(self) -> list[int]:
        return [e["seq"] for e in self.events]


def url(server: ApiServer, **params: object) -> str:
    q = "&".join(f"{k}={v}" for k, v in {"symbol": SYMBOL, "interval": "1m", **params}.items())
    return f"{server.ws_url}?{q}"


async def collect_until(
    ws: Any, out: Received, last_open_time: int, idle_s: float = 1.0, timeout_s: float = 90
) -> None:
    """Receive until the append of ``last_open_time`` arrived and then ``idle_s`` of silence."""
    deadline = time.monotonic() + timeout_s
    seen_last = False
    while time.monotonic() < deadline:
        try:
            raw = await asyncio.wait_for(ws.recv(), idle_s if seen_last else deadline - time.monotonic())
        except TimeoutError:
            if seen_last:
                return
            raise
        msg = orjson.loads(raw)
        if msg["type"] == "snapshot":
            out.snapshots.append(msg)
            continue
        out.events.append(msg)
        if msg["type"] == "append" and msg["candles"][-1]["open_time"] == last_open_time:
            seen_last = True
    seqs = [e["seq"] for e in out.events]
    raise TimeoutError(
        f"append of {last_open_time} never arrived: {len(seqs)} events, last seqs {seqs[-5:]}, "
        f"last types {[e['type'] for e in out.events[-5:]]}"
    )


def contiguous_after(seqs: list[int], start: int, end: int) -> None:
    assert seqs == list(range(start + 1, end + 1)), (
        f"expected {start + 1}..{end}, got {len(seqs)} seqs; missing "
        f"{sorted(set(range(start + 1, end + 1)) - set(seqs))[:10]}, doubled "
        f"{sorted(s for s in set(seqs) if seqs.count(s) > 1)[:10]}"
    )


def test_snapshot_then_live_and_resume_after_forced_disconnect(
    broker: str, ch: Client, ch_url: str, ch_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    topics = unique_topics(broker, topic_prefix)
    base = vision_candles(SYMBOL)[1000:1260]
    warm, live = base[:60], base[60:]
    group, state = f"g-{uuid.uuid4().hex[:8]}", tmp_path / "state"
    produce(broker, topics["raw"], warm)
    run_topology(broker, topics, ch_url, ch_db, state, idle_timeout_s=2, resample=(), group=group)
    stored = max_seq(ch, SYMBOL, "1m")
    assert stored == 2 * len(warm)  # partial_close + append per candle

    app = create_app(
        api_settings(),
        broker_address=broker,
        clickhouse_client_factory=lambda: make_client(ch_url, ch_db),
        events_topic=topics["events"],
    )
    plain, resumed = Received(), Received()
    ready = threading.Barrier(3, timeout=60)
    last_open = live[-1].open_time

    async def plain_client() -> None:
        async with websockets.connect(url(server), additional_headers=AUTH) as ws:
            plain.snapshots.append(orjson.loads(await asyncio.wait_for(ws.recv(), 30)))
            await asyncio.to_thread(ready.wait)
            await collect_until(ws, plain, last_open)

    async def resuming_client() -> None:
        first = Received()
        async with websockets.connect(url(server, api_key=API_KEY)) as ws:
            resumed.snapshots.append(orjson.loads(await asyncio.wait_for(ws.recv(), 30)))
            await asyncio.to_thread(ready.wait)
            while len(first.events) < 40:
                first.events.append(orjson.loads(await asyncio.wait_for(ws.recv(), 60)))
            ws.transport.abort()  # a network drop, not a clean close
        resumed.events.extend(first.events)
        since = first.events[-1]["seq"]
        async with websockets.connect(url(server, since_seq=since), additional_headers=AUTH) as ws:
            msg = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
            resumed.resumed_first = msg
            if msg["type"] != "snapshot":
                resumed.events.append(msg)
            await collect_until(ws, resumed, last_open)

    with ApiServer(app) as server:
        fa, fb = in_thread(plain_client), in_thread(resuming_client)
        ready.wait()  # both hold a snapshot: the fan-out is assigned before anything is produced
        producer = PacedProducer(broker, topics["raw"], live, per_s=150)
        producer.start()
        # idle 5 s: a producer starved of CPU for a moment must not look like the end of the input
        run_topology(broker, topics, ch_url, ch_db, state, idle_timeout_s=5, resample=(), group=group)
        producer.join(30)
        assert producer.error is None
        fb.result(timeout=150)
        fa.result(timeout=150)

    final = max_seq(ch, SYMBOL, "1m")
    assert final == stored + 3 * len(live)  # partial_update, partial_close, append per live candle
    types = stored_types(ch, SYMBOL, "1m")
    for got in (plain, resumed):
        snap = got.snapshots[0]
        assert (snap["type"], snap["symbol"], snap["interval"], snap["seq"]) == (
            "snapshot",
            SYMBOL,
            "1m",
            stored,
        )
        opens = [c["open_time"] for c in snap["candles"]]
        assert opens == [c.open_time for c in warm] and all(c["is_closed"] for c in snap["candles"])
        assert snap["meta"] == {
            "earliest_open_time": warm[0].open_time,
            "latest_open_time": warm[-1].open_time,
            "count": len(warm),
        }
        contiguous_after(got.seqs, stored, final)  # nothing missing, nothing doubled
        assert all(e["symbol"] == SYMBOL and e["interval"] == "1m" for e in got.events)
        assert [e["type"] for e in got.events] == [types[s] for s in got.seqs]
        appended = [c["open_time"] for e in got.events if e["type"] == "append" for c in e["candles"]]
        assert appended == [c.open_time for c in live]
        assert appended[0] > opens[-1]
    assert resumed.resumed_first is not None and resumed.resumed_first["type"] != "snapshot"
    assert len(resumed.snapshots) == 1


def _small_rcvbuf_socket(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    return s


def _overflows() -> float:
    return (
        REGISTRY.get_sample_value("ohlcv_ws_overflow_closed_total", {"symbol": SYMBOL, "interval": "1m"})
        or 0.0
    )


def test_slow_client_is_closed_4408_and_never_delays_the_others(
    broker: str, ch: Client, ch_url: str, ch_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    topics = unique_topics(broker, topic_prefix)
    base = vision_candles(SYMBOL)[2000:2500]
    warm, live = base[:20], base[20:]
    group, state = f"g-{uuid.uuid4().hex[:8]}", tmp_path / "state"
    produce(broker, topics["raw"], warm)
    run_topology(broker, topics, ch_url, ch_db, state, idle_timeout_s=2, resample=(), group=group)
    stored = max_seq(ch, SYMBOL, "1m")
    app = create_app(
        api_settings(),
        broker_address=broker,
        clickhouse_client_factory=lambda: make_client(ch_url, ch_db),
        events_topic=topics["events"],
        ws_queue_max=512,
    )
    normal, slow = Received(), Received()
    ready = threading.Barrier(3, timeout=60)
    overflow_before = _overflows()

    async def normal_client() -> None:
        async with websockets.connect(url(server), additional_headers=AUTH) as ws:
            normal.snapshots.append(orjson.loads(await asyncio.wait_for(ws.recv(), 30)))
            await asyncio.to_thread(ready.wait)
            await collect_until(ws, normal, live[-1].open_time)

    async def slow_client() -> None:
        sock = _small_rcvbuf_socket(server.port)
        async with websockets.connect(
            url(server), additional_headers=AUTH, sock=sock, max_queue=1, compression=None
        ) as ws:
            await asyncio.to_thread(ready.wait)
            # read nothing until the server gave up on this client
            deadline = time.monotonic() + 90
            while _overflows() == overflow_before and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            try:
                async for raw in ws:
                    msg = orjson.loads(raw)
                    (slow.snapshots if msg["type"] == "snapshot" else slow.events).append(msg)
            except websockets.ConnectionClosed:
                pass
            assert ws.close_code is not None
            slow.close_code = ws.close_code

    with ApiServer(app, sndbuf=4096) as server:
        fn, fs = in_thread(normal_client), in_thread(slow_client)
        ready.wait()
        producer = PacedProducer(broker, topics["raw"], live, per_s=150)
        producer.start()
        # idle 5 s: a producer starved of CPU for a moment must not look like the end of the input
        run_topology(broker, topics, ch_url, ch_db, state, idle_timeout_s=5, resample=(), group=group)
        producer.join(30)
        fn.result(timeout=90)
        fs.result(timeout=90)

    final = max_seq(ch, SYMBOL, "1m")
    contiguous_after(normal.seqs, stored, final)  # the fast client got everything, in order
    assert _overflows() == overflow_before + 1
    assert slow.close_code == 4408
    assert slow.snapshots and slow.snapshots[0]["seq"] == stored
    # what the slow client did get is a gap-free prefix: it can resume from its last seq
    contiguous_after(slow.seqs, stored, stored + len(slow.seqs))
    assert len(slow.seqs) < final - stored

    # partial updates expire from ohlcv_events after two days (TTL); simulate that, then a
    # resume from before them cannot be served and gets a fresh snapshot
    ch.command("ALTER TABLE ohlcv_events DELETE WHERE type = 'partial_update' SETTINGS mutations_sync = 1")
    app2 = create_app(
        api_settings(),
        broker_address=broker,
        clickhouse_client_factory=lambda: make_client(ch_url, ch_db),
        events_topic=topics["events"],
    )

    async def resume_expired() -> dict[str, Any]:
        async with websockets.connect(url(server2, since_seq=stored), additional_headers=AUTH) as ws:
            return dict(orjson.loads(await asyncio.wait_for(ws.recv(), 30)))

    with ApiServer(app2) as server2:
        msg = in_thread(resume_expired).result(timeout=60)
    assert (msg["type"], msg["reason"], msg["seq"]) == ("snapshot", "since_seq_expired", final)


@pytest.fixture(scope="module")
def dataset_server(dataset: Dataset) -> Any:
    with ApiServer(dataset.app()) as s:
        yield s


async def _close_code(u: str, headers: dict[str, str] | None = None) -> tuple[int | None, str]:
    async with websockets.connect(u, additional_headers=headers) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code is not None
        return ws.close_code, ws.close_reason or ""


@pytest.mark.parametrize(
    ("params", "headers", "code", "reason"),
    [
        ({}, None, 4401, "API key required"),
        ({}, {"X-API-Key": "wrong"}, 4403, "not valid"),
        ({"api_key": "wrong"}, None, 4403, "not valid"),
        ({"symbol": "BTCUSDT"}, AUTH, 4403, "BTCUSDT 1m is not served"),
        ({"interval": "3m"}, AUTH, 4403, "LINKUSDT 3m is not served"),
        ({"interval": "7x"}, AUTH, 4422, "interval"),
        ({"since_seq": "abc"}, AUTH, 4422, "since_seq must be an integer"),
        ({"since_seq": "-1"}, AUTH, 4422, "since_seq must be in"),
        ({"limit": "5000"}, AUTH, 4422, "limit must be in [1, 1000]"),
        ({"news": "maybe"}, AUTH, 4422, "news must be true, all or false"),
    ],
)
def test_refused_connections_close_with_a_code(
    dataset_server: ApiServer, params: dict[str, str], headers: dict[str, str] | None, code: int, reason: str
) -> None:
    got = in_thread(lambda: _close_code(url(dataset_server, **params), headers)).result(timeout=30)
    assert got[0] == code and reason in got[1], got


async def _negotiated(u: str) -> list[str]:
    async with websockets.connect(u, additional_headers=AUTH, compression="deflate") as ws:
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "snapshot"
        return [e.name for e in ws.protocol.extensions]


@pytest.mark.parametrize(("deflate", "expected"), [(False, []), (True, ["permessage-deflate"])])
def test_websocket_compression_follows_api_ws_deflate(
    dataset: Dataset, deflate: bool, expected: list[str]
) -> None:
    """A client offering permessage-deflate (as browsers do) gets it only with API_WS_DEFLATE."""
    app = dataset.app(api_settings(api_ws_deflate=deflate))
    with ApiServer(app) as server:
        assert in_thread(lambda: _negotiated(url(server))).result(timeout=60) == expected


def test_resume_sends_exactly_the_stored_events_after_since_seq(
    dataset_server: ApiServer, dataset: Dataset
) -> None:
    ch = dataset.client()
    top = max_seq(ch, SYMBOL, "1m")
    types = stored_types(ch, SYMBOL, "1m")

    async def resume(since: int, expect: int) -> list[dict[str, Any]]:
        got = []
        async with websockets.connect(url(dataset_server, since_seq=since), additional_headers=AUTH) as ws:
            while len(got) < expect:
                got.append(orjson.loads(await asyncio.wait_for(ws.recv(), 10)))
            with pytest.raises(TimeoutError):  # and nothing after
                await asyncio.wait_for(ws.recv(), 0.5)
        return got

    tail = in_thread(lambda: resume(top - 5, 5)).result(timeout=30)
    assert [e["seq"] for e in tail] == list(range(top - 4, top + 1))
    assert [e["type"] for e in tail] == [types[s] for s in range(top - 4, top + 1)]
    everything = in_thread(lambda: resume(0, top)).result(timeout=60)
    assert [e["seq"] for e in everything] == list(range(1, top + 1))
    nothing = in_thread(lambda: resume(top, 0)).result(timeout=30)
    assert nothing == []

    async def ahead() -> dict[str, Any]:
        async with websockets.connect(
            url(dataset_server, since_seq=top + 1000, limit=10), additional_headers=AUTH
        ) as ws:
            return dict(orjson.loads(await asyncio.wait_for(ws.recv(), 30)))

    snap = in_thread(ahead).result(timeout=30)
    assert (snap["type"], snap["reason"], snap["seq"], len(snap["candles"])) == (
        "snapshot",
        "since_seq_ahead",
        top,
        10,
    )
    ch.close()


def test_features_true_adds_each_closed_candles_feature_row_beside_the_sequenced_events(
    broker: str, ch: Client, ch_url: str, ch_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    topics = unique_topics(broker, topic_prefix)
    base = vision_candles(SYMBOL)[2000:2120]
    warm, live = base[:60], base[60:]
    group, state = f"g-{uuid.uuid4().hex[:8]}", tmp_path / "state"
    produce(broker, topics["raw"], warm)
    run_topology(broker, topics, ch_url, ch_db, state, idle_timeout_s=2, resample=(), group=group,
                 features=True)  # fmt: skip
    app = create_app(
        api_settings(), broker_address=broker, clickhouse_client_factory=lambda: make_client(ch_url, ch_db),
        events_topic=topics["events"], features_topic=topics["features"],
    )  # fmt: skip
    with_rows, without = Received(), Received()
    ready = threading.Barrier(3, timeout=60)
    last_open = live[-1].open_time

    async def client(out: Received, **params: object) -> None:
        async with websockets.connect(url(server, **params), additional_headers=AUTH) as ws:
            out.snapshots.append(orjson.loads(await asyncio.wait_for(ws.recv(), 30)))
            await asyncio.to_thread(ready.wait)
            deadline, idle = time.monotonic() + 90, False
            while time.monotonic() < deadline:
                try:
                    msg = orjson.loads(await asyncio.wait_for(ws.recv(), 2.0 if idle else 60))
                except TimeoutError:
                    if idle:
                        return
                    raise
                out.events.append(msg)
                last = msg["type"] == "features" or (
                    params.get("features") != "true" and msg["type"] == "append"
                )
                idle = idle or (
                    last and msg.get("open_time", msg.get("candles", [{}])[-1].get("open_time")) == last_open
                )

    with ApiServer(app) as server:
        fa = in_thread(lambda: client(with_rows, features="true"))
        fb = in_thread(lambda: client(without))
        ready.wait()
        producer = PacedProducer(broker, topics["raw"], live, per_s=150)
        producer.start()
        run_topology(broker, topics, ch_url, ch_db, state, idle_timeout_s=5, resample=(), group=group,
                     features=True)  # fmt: skip
        producer.join(30)
        fa.result(timeout=150)
        fb.result(timeout=150)

    rows = [e for e in with_rows.events if e["type"] == "features"]
    # the rows of the live candles, in order, each once (the first run stops idle before its
    # features step has read the warm-up's last events: those rows come first, once each)
    opens = [r["open_time"] for r in rows]
    assert opens == sorted(set(opens)) and opens[-len(live) :] == [c.open_time for c in live]
    assert set(opens[: -len(live)]) <= {c.open_time for c in warm}
    stored = dict(ch.query(
        "SELECT toUnixTimestamp64Milli(open_time), ma_20 FROM feature_snapshots FINAL WHERE interval = '1m'"
    ).result_rows)  # fmt: skip
    assert all(r["ma_20"] == stored[r["open_time"]] and r["feature_version"] == 1 for r in rows)
    # the candle events stay one gapless sequence; a client that did not ask gets no rows
    seqs = [e["seq"] for e in with_rows.events if e["type"] != "features"]
    contiguous_after(seqs, with_rows.snapshots[0]["seq"], max_seq(ch, SYMBOL, "1m"))
    assert not [e for e in without.events if e["type"] == "features"]
    assert [e["seq"] for e in without.events] == seqs


def test_news_true_sends_the_streams_stories_and_news_all_every_story(
    broker: str, ch: Client, ch_url: str, ch_db: str, topic_prefix: str
) -> None:
    from confluent_kafka import Producer

    from fakes.rss import FakeFeeds, coindesk, with_new_items
    from ohlcv.infra.kafka import ensure_topics
    from schemas.news import NewsArticle
    from schemas.topics import TopicSpec
    from streams.rss import Feed, RssPoller
    from topologies.news_logic import NewsDedup, Sentiment, asset_patterns, process

    news_topic = f"{topic_prefix}news.articles.{uuid.uuid4().hex[:6]}"
    ensure_topics(broker, (TopicSpec(news_topic, "", {}, "", partitions=1),))
    # stories as the news step makes them from the real feed and two new items ("XRP and bitcoin")
    with FakeFeeds() as feeds:
        poller = RssPoller([Feed("coindesk", feeds.set("/c.xml", with_new_items(coindesk(), 2)))])
        entries = poller.poll_all()[0].entries
    dedup, sentiment, tags = NewsDedup(), Sentiment(), asset_patterns(["XRPUSDT", SYMBOL])
    stories = [process(e.model_dump(), dedup, sentiment, tags, int(time.time() * 1000))[1] for e in entries]
    assert [s["symbols"] for s in stories if s] == [["XRPUSDT"], ["XRPUSDT"], [], [], []]
    app = create_app(
        api_settings(symbols=["XRPUSDT", SYMBOL]), broker_address=broker,
        clickhouse_client_factory=lambda: make_client(ch_url, ch_db), news_topic=news_topic,
    )  # fmt: skip
    got: dict[str, list[dict[str, Any]]] = {"xrp": [], "all": [], "link": [], "none": []}
    ready = threading.Barrier(5, timeout=60)

    async def client(name: str, **params: object) -> None:
        async with websockets.connect(url(server, **params), additional_headers=AUTH) as ws:
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "snapshot"
            await asyncio.to_thread(ready.wait)
            with contextlib.suppress(TimeoutError):
                while True:
                    got[name].append(orjson.loads(await asyncio.wait_for(ws.recv(), 4)))

    with ApiServer(app) as server:
        futs = [
            in_thread(lambda: client("xrp", symbol="XRPUSDT", news="true")),
            in_thread(lambda: client("all", news="all")),
            in_thread(lambda: client("link", news="true")),
            in_thread(lambda: client("none")),
        ]
        deadline = time.monotonic() + 30
        while not app.state.news_hub.ready:  # the news fan-out is assigned before anything is produced
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ready.wait()
        p = Producer({"bootstrap.servers": broker})
        p.produce(news_topic, key=b"junk", value=b"not json")  # skipped, the session goes on
        # stored before the sessions began: theirs to read from /api/news/recent, not an event
        old = {**stories[0], "article_id": "old", "ingested_at": int(time.time() * 1000) - 60_000}
        p.produce(news_topic, key=b"old", value=orjson.dumps(old))
        for s in stories:
            assert s is not None
            s["ingested_at"] = int(time.time() * 1000)  # as the news topology stores it
            p.produce(news_topic, key=s["article_id"].encode(), value=orjson.dumps(s))
        p.flush(10)
        for f in futs:
            f.result(timeout=60)
    ids = [s["article_id"] for s in stories if s]
    assert [m["article_id"] for m in got["all"]] == ids and all(m["type"] == "news" for m in got["all"])
    assert [m["article_id"] for m in got["xrp"]] == ids[:2]
    assert got["link"] == [] and got["none"] == []
    one = {k: v for k, v in got["all"][0].items() if k != "type"}
    assert NewsArticle.model_validate(one).title.startswith("Fresh story")
