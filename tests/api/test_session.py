"""Tier a: the WebSocket session's seam and resume rules, with a fake socket and store.

The store here stands for ClickHouse lagging behind Kafka (the sink writes a checkpoint after
the events are published): the events a process received before a client subscribed must still
reach that client, even when the stream then goes quiet.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from api.coalesce import Coalescer
from api.fanout import EventHub, LiveEvent
from api.queries import SnapshotData, Stream
from api.streaming import WsRequest, WsSession

KEY = "LINKUSDT:1m"
ST = Stream("LINKUSDT", "1m", 60_000)


def ev(seq: int) -> LiveEvent:
    return LiveEvent(
        key=KEY,
        seq=seq,
        type="partial_update",
        text=orjson.dumps({"type": "partial_update", "seq": seq}).decode(),
    )


class FakeStore:
    """``ohlcv_events`` holding seqs 1..stored (it grows when the test says so)."""

    def __init__(self, stored: int):
        self.stored = stored

    def snapshot(self, st: Stream, limit: int) -> SnapshotData:
        return SnapshotData(
            seq=self.stored, candles=[], earliest_open_time=None, latest_open_time=None, count=0
        )

    def max_seq(self, st: Stream) -> int:
        return self.stored

    def events_complete(self, st: Stream, after: int, upto: int) -> bool:
        return True

    def events(self, st: Stream, after: int, upto: int, limit: int) -> list[tuple[int, str, str]]:
        top = min(upto, self.stored)
        return [
            (s, "partial_update", orjson.dumps({"type": "partial_update", "seq": s}).decode())
            for s in range(after + 1, top + 1)
        ][:limit]


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self.gone = asyncio.Event()

    async def send_text(self, text: str) -> None:
        self.sent.append(orjson.loads(text))

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)

    def seqs(self) -> list[int]:
        return [m["seq"] for m in self.sent]


async def run_session(
    hub: EventHub, store: FakeStore, since: int | None
) -> tuple[FakeSocket, asyncio.Task[None]]:
    ws = FakeSocket()
    session = WsSession(ws, WsRequest(ST, since, 10), store, hub, Coalescer(), queue_max=100)  # type: ignore[arg-type]
    task = asyncio.create_task(session.run())
    await asyncio.sleep(0.05)
    return ws, task


async def stop(ws: FakeSocket, task: asyncio.Task[None]) -> None:
    ws.gone.set()
    await asyncio.wait_for(task, 5)


async def test_snapshot_then_the_events_already_seen_then_live() -> None:
    hub = EventHub("", "events")
    hub.subscribe(KEY, maxsize=100)  # another client: the ring is kept
    hub.dispatch([ev(s) for s in range(1, 11)])
    ws, task = await run_session(hub, FakeStore(stored=5), None)
    assert ws.sent[0]["type"] == "snapshot" and ws.seqs() == [5, 6, 7, 8, 9, 10]  # quiet stream: no wait
    hub.dispatch([ev(9), ev(11), ev(12)])  # a re-read old event is dropped
    await asyncio.sleep(0.05)
    assert ws.seqs() == [5, *range(6, 13)]
    await stop(ws, task)


async def test_resume_ahead_of_the_store_catches_up_from_the_ring() -> None:
    hub = EventHub("", "events")
    hub.subscribe(KEY, maxsize=100)
    hub.dispatch([ev(s) for s in range(1, 11)])
    ws, task = await run_session(hub, FakeStore(stored=5), since=8)
    assert ws.seqs() == [9, 10]
    await stop(ws, task)


async def test_resume_replays_the_store_then_the_ring() -> None:
    hub = EventHub("", "events")
    hub.subscribe(KEY, maxsize=100)
    hub.dispatch([ev(s) for s in range(1, 11)])
    ws, task = await run_session(hub, FakeStore(stored=5), since=2)
    assert ws.seqs() == list(range(3, 11)) and all(m["type"] != "snapshot" for m in ws.sent)
    await stop(ws, task)


async def test_events_seen_before_any_subscriber_come_from_the_store_once_it_has_them() -> None:
    hub = EventHub("", "events")
    hub.dispatch([ev(s) for s in range(1, 11)])  # nobody subscribed: no ring
    store = FakeStore(stored=5)
    ws, task = await run_session(hub, store, None)
    assert ws.seqs() == [5]  # 6..10 are not stored yet: the session polls
    store.stored = 10  # the sink's checkpoint lands
    await asyncio.sleep(0.3)
    assert ws.seqs() == [5, 6, 7, 8, 9, 10]
    await stop(ws, task)


async def test_resume_ahead_of_everything_gets_a_fresh_snapshot() -> None:
    hub = EventHub("", "events")
    ws, task = await run_session(hub, FakeStore(stored=5), since=50)
    assert (ws.sent[0]["type"], ws.sent[0]["reason"], ws.sent[0]["seq"]) == ("snapshot", "since_seq_ahead", 5)
    await stop(ws, task)
