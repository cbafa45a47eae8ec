"""``GET /api/ohlcv/recent`` from memory: per stream, the newest candles as the events tell them.

The most-polled read should not queue behind ClickHouse (embedded chDB runs one query at a time
per process), and it should say what the WebSocket says. So each API process keeps a *book* per
(symbol, interval) that a client asked ``recent`` of:

- **Seed.** Once the process's ``EventHub`` consumer is assigned, the book is seeded from
  ClickHouse: the newest ``BOOK_ROWS`` candles and the stream's max stored ``seq`` (S). Events
  the hub received meanwhile (its ring) with seq > S are applied on top.
- **Live.** Every event of the stream the hub consumes is applied in seq order (seq == book.seq
  + 1): the candles it stores (``schemas.events.stored_candles``) replace the book's by open
  time under the table's own rule (``candle_version``: the highest wins), as in
  ``ohlcv_candles`` under FINAL. An event
  at or below book.seq is already in; a jump means the book missed one, and it is dropped.
- **Check.** Events reach the API before the sink's checkpoint stores them, so a book is at
  least as new as ClickHouse, unless it missed an event published before the consumer was
  assigned. Every ``VERIFY_S`` the stream's max stored seq is read (one cheap query); a book
  still behind a seq ClickHouse held at the previous check is dropped.

A dropped book is re-seeded by the next request. A request the book cannot answer exactly (none
yet, or fewer rows of the asked kind than ``limit`` without holding the whole stream) is read
from ClickHouse as before. The answer's ``X-Recent-Source`` header says which (book, clickhouse).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from schemas.events import candle_version, stored_candles

logger = logging.getLogger(__name__)

#: candles a book holds (>= the largest ``limit`` of /recent, plus room for in-progress rows)
BOOK_ROWS = 1024
#: seconds between two checks of a book against ClickHouse's max(seq)
VERIFY_S = 5.0

RECENT_SERVED = Counter("ohlcv_api_recent_served_total", "GET /recent answers, by source", ["source"])
BOOKS_DROPPED = Counter("ohlcv_api_recent_books_dropped_total", "Recent books dropped, by reason", ["reason"])


@dataclass
class RecentBook:
    """The newest candles of one stream through ``seq``; see the module docstring."""

    seq: int
    rows: dict[int, dict[str, Any]]
    #: the seed held every candle of the stream and nothing was trimmed since
    complete: bool
    verified_at: float = field(default_factory=time.monotonic)
    #: a max(seq) ClickHouse held at the last check that the book had not reached
    behind: int = 0

    def apply(self, ev: dict[str, Any]) -> bool:
        """Apply one event; False when it shows the book missed an earlier one."""
        seq = int(ev["seq"])
        if seq <= self.seq:
            return True
        if seq != self.seq + 1:
            return False
        self.seq = seq
        for c in stored_candles(ev):  # the table's rows and its rule: the highest version wins
            t = int(c["open_time"])
            old = self.rows.get(t)
            if old is None or candle_version(c) >= candle_version(old):
                self.rows[t] = c
        if len(self.rows) > BOOK_ROWS:
            for t in sorted(self.rows)[: len(self.rows) - BOOK_ROWS]:
                del self.rows[t]
            self.complete = False
        return True

    def recent(self, limit: int, include_open: bool) -> list[dict[str, Any]] | None:
        """The newest ``limit`` candles ascending (as ``queries.recent``), or None when the book
        cannot tell them exactly."""
        times = sorted(self.rows)
        if not include_open:
            times = [t for t in times if self.rows[t]["is_closed"]]
        if len(times) < limit and not self.complete:
            return None
        return [self.rows[t] for t in times[-limit:]]


class RecentBooks:
    """The books of one API process, fed by its ``EventHub``."""

    def __init__(
        self,
        hub: Any,
        seed: Callable[[Any], tuple[int, list[dict[str, Any]]]],
        max_seq: Callable[[Any], int],
    ):
        """``seed(stream)`` -> (max stored seq, newest BOOK_ROWS candles ascending, the seq read
        first) and ``max_seq(stream)`` run in a worker thread (``stream``: an ``api.queries.Stream``);
        ``hub`` is the process's EventHub."""
        self.hub = hub
        self.seed_fn = seed
        self.max_seq_fn = max_seq
        self.books: dict[str, RecentBook] = {}
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        hub.listeners.append(self._on_event)

    # --- the hub's events (event loop) ------------------------------------------------------
    def _on_event(self, key: str, ev: dict[str, Any]) -> None:
        book = self.books.get(key)
        if book is not None and not book.apply(ev):
            self._drop(key, "seq_hole")

    def _drop(self, key: str, reason: str) -> None:
        if self.books.pop(key, None) is not None:
            BOOKS_DROPPED.labels(reason).inc()
            logger.info("recent book dropped key=%s reason=%s", key, reason)

    # --- requests -----------------------------------------------------------------------------
    def answer(self, st: Any, limit: int, include_open: bool) -> list[dict[str, Any]] | None:
        """The book's answer for stream ``st``, or None (the caller reads ClickHouse). Starts a
        seed or a check in the background when one is due."""
        key = st.key
        book = self.books.get(key)
        if book is None:
            self._spawn(key, self._seed(st))
            return None
        if time.monotonic() - book.verified_at > VERIFY_S:
            self._spawn(key, self._verify(st, book))
        return book.recent(limit, include_open)

    def _spawn(self, key: str, coro: Any) -> None:
        if key in self._busy:
            coro.close()
            return
        self._busy.add(key)
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _t: self._busy.discard(key))

    async def _seed(self, st: Any) -> None:
        key = st.key
        self.hub.track(key)  # keep this key's newest events in the hub's ring from now on
        if not self.hub.ready:
            return  # events published before the assignment would be missed: seed later
        try:
            seq, candles = await asyncio.to_thread(self.seed_fn, st)
        except Exception as exc:  # ClickHouse unavailable: requests keep reading it directly
            logger.warning("recent book seed failed key=%s: %s", key, exc)
            return
        book = RecentBook(seq=seq, rows={int(c["open_time"]): c for c in candles},
                          complete=len(candles) < BOOK_ROWS)  # fmt: skip
        for ev in self.hub.recent(key, seq, 1 << 62):  # received while the seed query ran
            if not book.apply(ev.data):
                return  # a hole the ring cannot fill: try again with the next request
        self.books[key] = book

    async def _verify(self, st: Any, book: RecentBook) -> None:
        key = st.key
        try:
            stored = await asyncio.to_thread(self.max_seq_fn, st)
        except Exception as exc:
            logger.warning("recent book check failed key=%s: %s", key, exc)
            return
        if self.books.get(key) is not book:
            return
        if book.behind and book.seq < book.behind:
            self._drop(key, "behind_clickhouse")
            return
        book.behind = stored if stored > book.seq else 0
        book.verified_at = time.monotonic()
