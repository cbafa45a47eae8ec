"""The recent book (api.recent_book) against the rule it must follow: after any in-order event
stream it answers what ``ohlcv_candles FINAL`` answers once the sink stored the same events.

The reference here is the sink's own row builder (``sinks.clickhouse.Rows``) applied like the
ReplacingMergeTree (highest version wins), over real LINKUSDT candles run through the real candle
state machine with gaps, late fills, revisions and in-progress updates.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from api.queries import Stream
from api.recent_book import BOOK_ROWS, RecentBook, RecentBooks
from sinks.clickhouse import CANDLE_COLUMNS, Rows
from tests.topologies.helpers import DictState, NoRecord, vision_candles
from topologies.candle_logic import CandleStateMachine

OUT_FIELDS = ("open_time", "close_time", "open", "high", "low", "close", "volume", "quote_volume", "trades",
              "taker_buy_base", "taker_buy_quote", "is_closed", "source", "revision", "bars")  # fmt: skip


def events_of_a_market() -> list[dict[str, Any]]:
    """Events of 1500 real candles with partials, a gap filled late, a revision, a batch."""
    cs = list(vision_candles("LINKUSDT")[:1500])
    m = CandleStateMachine(NoRecord(), lambda: 1)
    state = DictState()
    out: list[dict[str, Any]] = []
    for i, c in enumerate(cs[:1400]):
        if 700 <= i < 710:
            continue  # a gap, filled below
        if i % 50 == 0:
            out += m.apply(
                replace(c, is_closed=False, close=c.open, high=max(c.open, c.low), volume=0.0), state
            )
        out += m.apply(c, state)
    out += m.apply_many(cs[700:710], state)  # late fill, one batch
    out += m.apply(replace(cs[1399], close=cs[1399].close * 1.01, high=cs[1399].high * 1.02), state)  # repair
    out += m.apply_many(cs[1400:1500], state)
    out += m.apply(replace(cs[-1], open_time=cs[-1].open_time + 60_000, close_time=cs[-1].close_time + 60_000,
                           is_closed=False), state)  # fmt: skip  # the candle in progress
    return [o for o in out if o["kind"] == "event"]


def final_table(events: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    rows = Rows()
    for e in events:
        rows.add(e, 0)
    table: dict[int, dict[str, Any]] = {}
    for r in rows.candle_rows():
        row = dict(zip(CANDLE_COLUMNS, r, strict=True))
        old = table.get(row["open_time"])
        if old is None or row["version"] >= old["version"]:
            table[row["open_time"]] = row
    return {t: {f: row[f] for f in OUT_FIELDS} for t, row in table.items()}


def reference(table: dict[int, dict[str, Any]], limit: int, include_open: bool) -> list[dict[str, Any]]:
    times = sorted(t for t, r in table.items() if include_open or r["is_closed"])
    return [table[t] for t in times[-limit:]]


def test_a_book_answers_what_the_table_holds_after_the_same_events() -> None:
    events = events_of_a_market()
    book = RecentBook(seq=0, rows={}, complete=True)
    for e in events:
        assert book.apply(e)
    table = final_table(events)
    for limit in (1, 100, 1000):
        for include_open in (True, False):
            got = book.recent(limit, include_open)
            assert got is not None
            assert [{f: c[f] for f in OUT_FIELDS} for c in got] == reference(table, limit, include_open)
    assert book.rows[max(book.rows)]["is_closed"] is False  # the candle in progress is the newest


def test_a_seeded_book_replays_only_what_follows_and_refuses_a_hole() -> None:
    events = events_of_a_market()
    half = len(events) // 2
    seed = final_table(events[:half])
    book = RecentBook(seq=events[half - 1]["seq"], rows={t: dict(r) for t, r in seed.items()}, complete=True)
    for e in events[half - 5 :]:  # a few already in the seed: ignored
        assert book.apply(e)
    assert book.recent(1000, True) == reference(final_table(events), 1000, True)

    holed = RecentBook(seq=0, rows={}, complete=True)
    assert holed.apply(events[0])
    assert not holed.apply(events[2]), "a seq jump must be refused"


def test_a_trimmed_book_answers_only_what_it_holds_in_full() -> None:
    events = events_of_a_market()
    book = RecentBook(seq=0, rows={}, complete=True)
    for e in events:
        book.apply(e)
    assert len(book.rows) == BOOK_ROWS and not book.complete  # 1500 candles did not fit
    assert book.recent(1000, False) is not None
    partial = RecentBook(seq=0, rows={}, complete=False)
    partial.apply(events[0])
    assert partial.recent(10, True) is None, "a book that does not hold the whole stream must not guess"


class FakeHub:
    def __init__(self) -> None:
        self.listeners: list[Any] = []
        self.ready = True
        self.tracked: set[str] = set()

    def track(self, key: str) -> None:
        self.tracked.add(key)

    def recent(self, key: str, after: int, before: int) -> list[Any]:
        return []


def test_books_seed_in_the_background_follow_events_and_drop_when_behind_clickhouse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The manager: the first request reads ClickHouse and starts a seed; later ones are answered
    by the book, which follows the hub's events; a book still behind a seq ClickHouse held at the
    previous check is dropped (it missed an event) and re-seeded by the next request."""
    events = events_of_a_market()
    stored = {"seq": 10}
    table = final_table(events[:10])

    def seed(st: Any) -> tuple[int, list[dict[str, Any]]]:
        return stored["seq"], [table[t] for t in sorted(table)]

    async def scenario() -> None:
        hub = FakeHub()
        books = RecentBooks(hub, seed, lambda st: stored["seq"])
        st = Stream("LINKUSDT", "1m", 60_000)
        assert books.answer(st, 5, True) is None  # not seeded yet: the caller reads ClickHouse
        await asyncio.sleep(0.05)
        assert hub.tracked == {st.key} and st.key in books.books
        for e in events[10:20]:
            for listener in hub.listeners:
                listener(st.key, e)
        assert books.answer(st, 1000, True) == reference(final_table(events[:20]), 1000, True)

        # ClickHouse stores seq 25 while the hub delivered only up to 20: a missed event
        stored["seq"] = 25
        monkeypatch.setattr("api.recent_book.VERIFY_S", 0.0)
        books.answer(st, 5, True)
        await asyncio.sleep(0.05)
        assert books.books[st.key].behind == 25  # noted at the first check
        books.answer(st, 5, True)
        await asyncio.sleep(0.05)
        assert st.key not in books.books  # still behind at the second: dropped

    asyncio.run(scenario())
