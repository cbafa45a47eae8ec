"""News in the feature rows: a rolling news sentiment per symbol, and a flag when the news
input was stalled, as known at the bar's close (point in time, no look-ahead).

For the bar of a stream opening at ``o`` (closing at ``o + step``), with
``τ = o + step - NEWS_FEATURE_DELAY``:

- ``news_count``: the stories tagged with the stream's symbol (``news_articles.symbols``) first
  fetched (``fetched_at``) in ``(τ - NEWS_FEATURE_WINDOW, τ]``;
- ``news_sentiment``: their mean VADER compound score (``news_articles.sentiment``); null when
  there is none;
- ``news_stalled``: no story from any source was fetched in ``(τ - NEWS_SOURCE_STALL_THRESHOLD_SEC,
  τ]`` (or none ever): the row's news input was stalled, and a zero count means nothing.

Why ``fetched_at``: it is when this platform first had the story (the first poll that carried
it; a replay or a second source does not move it), so a row never sees a story it could not
have known at the close, and a rebuild of the row gives the same value as the live stream. A
story's ``published_at`` can lie hours before it reached any feed. Why the delay: a story
fetched just before a close reaches the features process after the news topology has judged
it (measured poll->stored p99 3.1 s); ``NEWS_FEATURE_DELAY`` (default 30 s) keeps it out of
that bar in the stream and in a rebuild alike. A news path further behind than the delay
makes a live row miss a story its rebuild counts; ``ohlcv features rebuild`` is the reference.

``NewsBook`` holds the stories (id, fetched time, symbols, sentiment): seeded from
``news_articles``, then fed from ``news.articles`` by ``NewsTail`` (every partition, from the
start of the retained topic, ids deduplicated); the features step waits until the tail has
read the topic to its end as of the start, so replayed history sees every story stored before.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import orjson
from clickhouse_connect.driver.client import Client

from schemas.features import NEWS_COLUMNS, RowBlock
from schemas.intervals import interval_ms

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewsFeatureConfig:
    window_ms: int = 3_600_000
    delay_ms: int = 30_000
    stall_ms: int = 900_000

    @classmethod
    def from_settings(cls, settings: Any) -> NewsFeatureConfig:
        return cls(
            int(settings.news_feature_window * 1000),
            int(settings.news_feature_delay * 1000),
            int(settings.news_source_stall_threshold_sec * 1000),
        )


class _Series:
    """One symbol's stories in fetch-time order, with prefix sums of their sentiment."""

    def __init__(self, times: list[int], sentiments: list[float]):
        order = np.argsort(np.asarray(times, dtype=np.int64), kind="stable")
        self.t = np.asarray(times, dtype=np.int64)[order]
        self.cum = np.concatenate(([0.0], np.cumsum(np.asarray(sentiments, dtype=np.float64)[order])))


class NewsBook:
    def __init__(self, cfg: NewsFeatureConfig | None = None):
        self.cfg = cfg or NewsFeatureConfig()
        self._ids: set[str] = set()
        self._all: list[int] = []  #: every story's fetch time, sorted
        self._every: np.ndarray | None = None  #: ``_all`` as an array, until the next story
        self._by: dict[str, tuple[list[int], list[float]]] = {}
        self._series: dict[str, _Series] = {}
        self._lock = threading.Lock()
        self.ready = threading.Event()
        self.ready.set()  # a book nothing feeds is complete as it is
        self.stories = 0

    def add(self, article_id: str, fetched_at: int, symbols: Iterable[str], sentiment: float) -> bool:
        with self._lock:
            if article_id in self._ids:
                return False
            self._ids.add(article_id)
            t = int(fetched_at)
            bisect.insort(self._all, t)
            self._every = None
            for s in symbols:
                ts, ss = self._by.setdefault(s, ([], []))
                ts.append(t)
                ss.append(float(sentiment))
                self._series.pop(s, None)
            self.stories += 1
            return True

    def add_many(self, rows: Iterable[Sequence[Any]]) -> int:
        """``rows``: (article_id, fetched_at ms, symbols, sentiment)."""
        return sum(self.add(a, t, syms, s) for a, t, syms, s in rows)

    def seed(self, client: Client) -> int:
        """Every stored story (``news_articles``)."""
        res = client.query(
            "SELECT article_id, toUnixTimestamp64Milli(fetched_at), symbols, sentiment "
            "FROM news_articles FINAL"
        )
        return self.add_many(res.result_rows)

    def values(
        self, symbol: str, interval: str, open_times: Sequence[int]
    ) -> tuple[list[float | None], list[int], list[bool]]:
        """(news_sentiment, news_count, news_stalled) of the stream's bars at ``open_times``."""
        cfg = self.cfg
        tau = np.asarray(open_times, dtype=np.int64) + (interval_ms(interval) - cfg.delay_ms)
        with self._lock:
            series = self._series.get(symbol)
            if series is None and symbol in self._by:
                series = self._series[symbol] = _Series(*self._by[symbol])
            if self._every is None:  # rebuilt once per new story, not once per record
                self._every = np.asarray(self._all, dtype=np.int64)
            every = self._every
        last = np.searchsorted(every, tau, side="right") - 1
        stalled = (last < 0) | (tau - every[np.maximum(last, 0)] >= cfg.stall_ms) if every.size else None
        stalled_list = [True] * tau.size if stalled is None else stalled.tolist()
        if series is None:
            return [None] * tau.size, [0] * tau.size, stalled_list
        hi = np.searchsorted(series.t, tau, side="right")
        lo = np.searchsorted(series.t, tau - cfg.window_ms, side="right")
        n = hi - lo
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (series.cum[hi] - series.cum[lo]) / n
        sent: list[float | None] = [
            None if k == 0 else float(m) for k, m in zip(n.tolist(), mean.tolist(), strict=True)
        ]
        return sent, n.tolist(), stalled_list

    def annotate(self, rows: list[dict[str, Any]]) -> None:
        """Add the news columns to feature rows (of one stream), and to a ``RowBlock``'s columns."""
        if not rows:
            return
        r0 = rows[0]
        sent, count, stalled = self.values(r0["symbol"], r0["interval"], [r["open_time"] for r in rows])
        for r, a, b, c in zip(rows, sent, count, stalled, strict=True):
            r["news_sentiment"], r["news_count"], r["news_stalled"] = a, b, c
        if isinstance(rows, RowBlock):
            rows.columns.update(zip(NEWS_COLUMNS, (sent, count, stalled), strict=True))


class NewsTail(threading.Thread):
    """Feeds a ``NewsBook`` from ``news.articles``: every partition from the start, then live;
    ``book.ready`` is set once it has read up to each partition's end as of its start. It lives
    as long as the process (a daemon thread); ``stop_all`` ends every one (an Application run
    in a test, or one of several in a process)."""

    running: ClassVar[set[NewsTail]] = set()

    @classmethod
    def stop_all(cls) -> None:
        for t in list(cls.running):
            t.stop()
            t.join(5)

    def __init__(self, book: NewsBook, broker_address: str, topic: str, consumer_config: dict[str, Any]):
        super().__init__(name="news-tail", daemon=True)
        self.book, self.topic = book, topic
        self.broker_address, self.consumer_config = broker_address, consumer_config
        self.stop_event = threading.Event()
        self.book.ready.clear()

    def start(self) -> None:
        NewsTail.running.add(self)
        super().start()

    def run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        c = Consumer({
            "bootstrap.servers": self.broker_address, "group.id": f"news-tail-{id(self)}-{time.time_ns()}",
            "enable.auto.commit": False, "auto.offset.reset": "earliest", **self.consumer_config,
        })  # fmt: skip
        try:
            meta = c.list_topics(self.topic, timeout=10).topics.get(self.topic)
            parts = sorted(meta.partitions) if meta is not None and not meta.error else []
            ends = {p: c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1] for p in parts}
            c.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
            behind = {p for p, end in ends.items() if end > 0}
            if not behind:
                self.book.ready.set()
            while not self.stop_event.is_set():
                got = c.consume(500, 0.5)
                for m in got:
                    if m.error() is not None:
                        continue
                    try:
                        a = orjson.loads(m.value())
                        self.book.add(a["article_id"], a["fetched_at"], a["symbols"], a["sentiment"])
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                        where = f"{m.partition()}:{m.offset()}"
                        logger.warning("news.articles record at %s is not a story", where)
                    if m.partition() in behind and m.offset() + 1 >= ends[m.partition()]:
                        behind.discard(m.partition())
                # a broker may report the end a batch short (the embedded one does): caught up
                # is past every end and a read that came back short of its limit
                if not behind and len(got) < 500 and not self.book.ready.is_set():
                    self.book.ready.set()
        except Exception:
            logger.exception("news tail of %s failed: rows get the stories stored before it", self.topic)
            self.book.ready.set()
        finally:
            c.close()
            NewsTail.running.discard(self)

    def stop(self) -> None:
        self.stop_event.set()
