"""Replay onto the real embedded broker, partial updates and pacing."""

from __future__ import annotations

import itertools
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from ohlcv.infra.broker import EMBEDDED_CONSUMER_CONFIG
from ohlcv.infra.kafka import ensure_topics
from schemas.events import DeadLetter
from schemas.klines import Candle, candle_from_raw, raw_from_candle
from schemas.topics import TopicSpec
from streams.importers import BadRow, read_candles
from streams.replay import (
    CandleReplaySource,
    paced,
    partial_updates,
    replay_events,
    replay_to_kafka,
    send_dead_letters,
)
from tests.streams.test_importers import LINK, XRP

MINUTE = 60_000


def make_topic(address: str, prefix: str, name: str, partitions: int = 3) -> str:
    topic = f"{prefix}{name}"
    spec = TopicSpec(name=topic, key="test", value_schema={}, description="test", partitions=partitions)
    ensure_topics(address, (spec,))
    return topic


Record = tuple[int, str, dict[str, Any]]  # partition, key, value


def consume(
    address: str,
    topic: str,
    expected: int,
    timeout_s: float = 20.0,
    want: Callable[[Record], bool] = lambda _: True,
) -> list[Record]:
    """The records of ``topic`` that ``want``, in partition order; waits for ``expected``, then
    briefly for extras."""
    consumer = Consumer(
        {
            "bootstrap.servers": address,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            **EMBEDDED_CONSUMER_CONFIG,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        out: list[Record] = []
        deadline = time.monotonic() + timeout_s
        extra_until: float | None = None
        while time.monotonic() < (extra_until or deadline):
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            rec = (msg.partition(), msg.key().decode(), orjson.loads(msg.value()))
            if want(rec):
                out.append(rec)
            if len(out) >= expected and extra_until is None:
                extra_until = time.monotonic() + 0.5
        return out
    finally:
        consumer.close()


def slice_file(tmp_path: Path, n: int, name: str = "XRP_USDT-1m.json") -> Path:
    path = tmp_path / name
    path.write_bytes(orjson.dumps(orjson.loads(XRP.read_bytes())[:n]))
    return path


# --- partial updates ----------------------------------------------------------------------


def assert_partials_converge(final: Candle, partials: list[Candle]) -> None:
    seq = [*partials, final]
    for prev, cur in itertools.pairwise(seq):
        assert cur.high >= prev.high and cur.low <= prev.low
        assert cur.volume >= prev.volume
        assert cur.event_time > prev.event_time
    for p in partials:
        assert (p.open_time, p.close_time, p.open, p.symbol, p.interval) == (
            final.open_time, final.close_time, final.open, final.symbol, final.interval,
        )  # fmt: skip
        assert p.is_closed is False
        assert final.low <= p.low <= min(p.open, p.close)
        assert max(p.open, p.close) <= p.high <= final.high
        assert p.volume <= final.volume
        assert final.open_time <= p.event_time < final.close_time
        for field in ("quote_volume", "trades", "taker_buy_base", "taker_buy_quote"):
            assert (getattr(p, field) is None) == (getattr(final, field) is None)
        # every update is a kline the raw-topic contract accepts
        back = candle_from_raw(raw_from_candle(p, source="replay", received_at=1))
        assert back.same_values(p)


def test_partials_of_real_candles_converge_to_the_close() -> None:
    real = [*itertools.islice(read_candles(LINK), 300), *itertools.islice(read_candles(XRP), 300)]
    for final in real:
        partials = partial_updates(final, 4)
        assert len(partials) == 4
        assert_partials_converge(final, partials)
    assert partial_updates(real[0], 0) == []


prices = st.decimals(min_value="0.00000001", max_value="100000", places=5).map(float)


@st.composite
def candles(draw: st.DrawFn) -> Candle:
    a, b, c, d = sorted(draw(st.lists(prices, min_size=4, max_size=4)))
    o, cl = draw(st.permutations([b, c]))
    start = draw(st.integers(0, 10**7)) * MINUTE
    volume = draw(st.decimals(min_value="0", max_value="1e9", places=3).map(float))
    with_extras = draw(st.booleans())
    return Candle(
        symbol="BTCUSDT", interval="1m", open_time=start, close_time=start + MINUTE - 1,
        open=o, high=d, low=a, close=cl, volume=volume,
        quote_volume=volume * 3 if with_extras else None,
        trades=draw(st.integers(0, 10**6)) if with_extras else None,
        taker_buy_base=volume / 2 if with_extras else None,
        taker_buy_quote=volume * 1.5 if with_extras else None,
        is_closed=True, source="import", event_time=start + MINUTE - 1,
    )  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(final=candles(), n=st.integers(1, 12))
def test_partials_are_valid_monotone_and_converge(final: Candle, n: int) -> None:
    partials = partial_updates(final, n)
    assert len(partials) == n
    assert_partials_converge(final, partials)


def test_replay_events_put_partials_before_each_close() -> None:
    finals = list(itertools.islice(read_candles(XRP), 3))
    events = list(replay_events(finals, partials=2))
    assert [(e.open_time, e.is_closed) for e in events] == [
        (f.open_time, closed) for f in finals for closed in (False, False, True)
    ]


# --- pacing -------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_paced_follows_market_time_at_the_speed_factor() -> None:
    finals = list(itertools.islice(read_candles(XRP), 5))
    fake = FakeClock()
    sent_at = []
    for ev in paced(replay_events(finals, 1), 60.0, clock=fake.clock, sleep=fake.sleep, max_sleep_s=10):
        sent_at.append((fake.now, ev))
    # speed 60: a market minute per wall second; the partial sits half way through its minute
    t0, first = sent_at[0]
    assert first.is_closed is False
    for at, ev in sent_at:
        assert at - t0 == pytest.approx((ev.event_time - first.event_time) / 1000 / 60)
    # the first partial is at 00:00:30 of bar 0, the last close at 00:00:59.999 of bar 4
    assert sent_at[-1][0] - t0 == pytest.approx((4 * MINUTE + 29_999) / 1000 / 60)
    # as fast as possible: no sleeping at all
    fake2 = FakeClock()
    assert len(list(paced(finals, None, clock=fake2.clock, sleep=fake2.sleep))) == 5
    assert fake2.slept == []


def test_paced_waits_out_gaps_and_stops_on_request() -> None:
    finals = list(read_candles(XRP))
    before_gap = next(
        i for i, (a, b) in enumerate(itertools.pairwise(finals)) if b.open_time - a.open_time > MINUTE
    )
    fake = FakeClock()
    out = list(paced(finals[before_gap : before_gap + 2], 60.0, clock=fake.clock, sleep=fake.sleep))
    assert len(out) == 2
    assert sum(fake.slept) == pytest.approx(151.0)  # 150 missing minutes + the next one, at 60x
    # stop() is honoured between events and during a wait: 2.5 s at 60x is 2.5 market minutes
    fake = FakeClock()
    got = list(
        paced(finals[:100], 60.0, stop=lambda: fake.now - 1000.0 > 2.5, clock=fake.clock, sleep=fake.sleep)
    )
    assert len(got) == 3
    assert fake.now - 1000.0 <= 2.5 + 0.2


# --- onto the real broker -----------------------------------------------------------------


@pytest.mark.broker
def test_bulk_replay_delivers_exactly_the_expected_records(broker: str, topic_prefix: str) -> None:
    topic = make_topic(broker, topic_prefix, "raw")
    xrp = list(itertools.islice(read_candles(XRP), 200))
    link = list(itertools.islice(read_candles(LINK), 100))
    progress: list[int] = []
    result = replay_to_kafka(
        broker, [*xrp, *link], topic=topic, partials=2, market="usdm", on_progress=progress.append,
        progress_every=64,
    )  # fmt: skip
    assert (result.closed, result.partial, result.records) == (300, 600, 900)
    assert sum(progress) == 300 and progress[0] == 64
    records = consume(broker, topic, 900)
    assert len(records) == 900
    by_key: dict[str, list[Record]] = defaultdict(list)
    for rec in records:
        by_key[rec[1]].append(rec)
    assert {k: len(v) for k, v in by_key.items()} == {"XRPUSDT:1m": 600, "LINKUSDT:1m": 300}
    for key, finals in (("XRPUSDT:1m", xrp), ("LINKUSDT:1m", link)):
        recs = by_key[key]
        assert len({p for p, _, _ in recs}) == 1  # one key, one partition: order is kept
        got = [candle_from_raw(v) for _, _, v in recs]
        assert [c.is_closed for c in got] == [False, False, True] * len(finals)
        closes = [c for c in got if c.is_closed]
        assert [c.open_time for c in closes] == [f.open_time for f in finals]
        assert all(c.same_values(f) for c, f in zip(closes, finals, strict=True))
        for i, final in enumerate(finals):
            assert [c.open_time for c in got[3 * i : 3 * i + 3]] == [final.open_time] * 3
            assert got[3 * i + 2].same_values(final)
        assert {v["source"] for _, _, v in recs} == {"import"}
        assert {v["market"] for _, _, v in recs} == {"usdm"}


@pytest.mark.broker
def test_paced_replay_takes_market_time(broker: str, topic_prefix: str) -> None:
    topic = make_topic(broker, topic_prefix, "raw", partitions=1)
    finals = list(itertools.islice(read_candles(XRP), 6))
    started = time.monotonic()
    result = replay_to_kafka(broker, finals, topic=topic, speed=600.0, source="replay")
    elapsed = time.monotonic() - started
    assert result.closed == 6
    assert 0.45 <= elapsed < 5.0  # 5 market minutes at 600x = 0.5 s
    records = consume(broker, topic, 6)
    assert [candle_from_raw(v).open_time for _, _, v in records] == [f.open_time for f in finals]
    assert {v["source"] for _, _, v in records} == {"replay"}


@pytest.mark.broker
def test_dead_letters_carry_file_line_and_reason(broker: str, topic_prefix: str) -> None:
    topic = make_topic(broker, topic_prefix, "dlq", partitions=1)
    bad = BadRow(
        path="/data/LINKUSDT-1m-2026-02.csv", line=7, reason="expected 12 columns, found 3", payload="1,2,3"
    )
    assert send_dead_letters(broker, [bad], topic=topic) == 1
    [(_, key, value)] = consume(broker, topic, 1)
    letter = DeadLetter.model_validate(value)
    assert key == "LINKUSDT-1m-2026-02.csv"
    assert (letter.source, letter.reason, letter.payload, letter.stage) == (
        "/data/LINKUSDT-1m-2026-02.csv:7", "expected 12 columns, found 3", "1,2,3", "import.parse",
    )  # fmt: skip


@pytest.mark.broker
def test_replay_source_runs_inside_a_quix_application(broker: str, topic_prefix: str, tmp_path: Path) -> None:
    from quixstreams import Application

    raw = make_topic(broker, topic_prefix, "raw")
    dlq = make_topic(broker, topic_prefix, "dlq", partitions=1)
    rows = orjson.loads(XRP.read_bytes())[:21]
    rows[10] = [rows[10][0], -1, 1, 1, 1, 1]
    path = tmp_path / "XRP_USDT-1m.json"
    path.write_bytes(orjson.dumps(rows))
    source = CandleReplaySource(
        [path], name=f"replay-{uuid.uuid4().hex[:6]}", speed=6000.0, partials=1, mode="dead-letter",
        raw_topic=raw, dead_letter_topic=dlq,
    )  # fmt: skip
    app = Application(
        broker_address=broker,
        consumer_group=f"{topic_prefix}app",
        auto_create_topics=False,
        state_dir=str(tmp_path / "state"),
        consumer_extra_config=EMBEDDED_CONSUMER_CONFIG,
    )
    source.add_to(app)
    app.run()  # returns when the source has replayed its files
    records = consume(broker, raw, 40)
    assert len(records) == 40
    got = [candle_from_raw(v) for _, _, v in records]
    closes = [c for c in got if c.is_closed]
    assert len(closes) == 20 and len(got) - len(closes) == 20
    assert [c.open_time for c in closes] == [r[0] for i, r in enumerate(rows) if i != 10]
    assert {v["source"] for _, _, v in records} == {"replay"}
    [(_, key, letter)] = consume(broker, dlq, 1)
    assert key == "XRP_USDT-1m.json" and letter["source"] == f"{path}:11"
