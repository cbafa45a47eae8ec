"""Tier a: the per-process fan-out without Kafka (dispatch, overflow, the seam ring)."""

from __future__ import annotations

import orjson

from api.fanout import EventHub, LiveEvent, parse_event


def ev(seq: int, key: str = "LINKUSDT:1m") -> LiveEvent:
    return LiveEvent(key=key, seq=seq, type="append", text=f'{{"seq":{seq}}}')


async def test_a_full_queue_overflows_that_subscriber_only() -> None:
    hub = EventHub("", "events")
    slow, fast = hub.subscribe("LINKUSDT:1m", maxsize=10), hub.subscribe("LINKUSDT:1m", maxsize=100)
    other = hub.subscribe("XRPUSDT:1m", maxsize=1)
    hub.dispatch([ev(s) for s in range(1, 51)])
    assert slow.overflowed.is_set() and slow.queue.qsize() == 10
    assert not fast.overflowed.is_set() and [fast.queue.get_nowait().seq for _ in range(50)] == list(
        range(1, 51)
    )
    assert other.queue.empty() and not other.overflowed.is_set()
    hub.dispatch([ev(51)])
    assert slow.queue.qsize() == 10  # nothing more for an overflowed subscriber
    assert hub.subscribers == 3 and hub.latest_seq("LINKUSDT:1m") == 51
    hub.unsubscribe(slow)
    hub.unsubscribe(fast)
    assert hub.subscribers == 1 and hub.recent("LINKUSDT:1m", 0, 100) == []


async def test_the_ring_holds_recent_events_of_subscribed_keys() -> None:
    hub = EventHub("", "events", ring_size=5)
    hub.dispatch([ev(1), ev(2)])  # nobody subscribed: not kept
    assert hub.recent("LINKUSDT:1m", 0, 10) == [] and hub.latest_seq("LINKUSDT:1m") == 2
    hub.subscribe("LINKUSDT:1m", maxsize=100)
    hub.dispatch([ev(s) for s in range(3, 11)])
    assert [e.seq for e in hub.recent("LINKUSDT:1m", 0, 100)] == [6, 7, 8, 9, 10]
    assert [e.seq for e in hub.recent("LINKUSDT:1m", 6, 9)] == [7, 8]


async def test_without_a_broker_live_events_are_off_but_subscribing_works() -> None:
    hub = EventHub("", "events")
    hub.subscribe("LINKUSDT:1m", maxsize=1)
    assert not hub.started and "no broker address" in hub.last_error
    assert await hub.wait_ready(5) is False  # returns at once


def test_parse_event_reads_key_seq_and_type_and_refuses_the_rest() -> None:
    raw = orjson.dumps({"type": "append", "symbol": "LINKUSDT", "interval": "1m", "seq": 7, "candles": []})
    got = parse_event(b"LINKUSDT:1m", raw)
    assert got is not None and (got.key, got.seq, got.type, got.text) == (
        "LINKUSDT:1m",
        7,
        "append",
        raw.decode(),
    )
    assert parse_event(None, b"not json") is None
    assert parse_event(None, b'{"type": "append"}') is None
