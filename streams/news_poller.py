"""The news poller service: every ``NEWS_POLL_INTERVAL`` seconds (or when ``trigger``ed) it polls
every feed (``streams.rss.RssPoller``), produces the entries onto ``news.raw`` (refused ones to
``ohlcv.deadletter``), and records each poll in ``news_polls`` (status, HTTP code, entries,
refused, latency, error, backoff left, error streak), which source health reads."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from clickhouse_connect.driver.client import Client
from confluent_kafka import Producer

from streams.rss import PollResult, RssPoller, publish

logger = logging.getLogger(__name__)

POLL_COLUMNS = (
    "source",
    "poll_id",
    "at",
    "feed_url",
    "status",
    "http_status",
    "entries",
    "refused",
    "latency_ms",
    "error",
    "retry_in_s",
    "error_streak",
)


def record_polls(client: Client, poller: RssPoller, results: list[PollResult]) -> None:
    now = int(time.time() * 1000)
    rows = [
        [
            r.feed.name,
            r.poll_id,
            now,
            r.feed.url,
            r.status,
            r.http_status,
            len(r.entries),
            len(r.refused),
            r.latency_ms,
            r.error or "",
            r.retry_in_s,
            poller.state[r.feed.name].error_streak,
        ]
        for r in results
    ]
    if rows:
        client.insert("news_polls", rows, column_names=list(POLL_COLUMNS))


def poll_once(
    poller: RssPoller,
    producer: Any,
    client: Client | None,
    *,
    topic: str | None = None,
    dead_topic: str | None = None,
    flush_s: float = 10.0,
) -> list[PollResult]:
    """One poll of every feed, produced and recorded."""
    results = poller.poll_all()
    for r in results:
        publish(producer, r, topic=topic, dead_topic=dead_topic)
    left = producer.flush(flush_s)
    if left:
        logger.error("%d news records not delivered within %.0fs", left, flush_s)
    if client is not None:
        record_polls(client, poller, results)
    return results


class NewsPollerThread(threading.Thread):
    def __init__(
        self,
        poller: RssPoller,
        broker_address: str,
        client: Client | None,
        every_s: float,
        *,
        topic: str | None = None,
        dead_topic: str | None = None,
        before: Callable[[NewsPollerThread], None] | None = None,
    ):
        """``before`` runs in the thread before the first poll (the start-up bootstrap)."""
        super().__init__(name="news-poller", daemon=True)
        self.before = before
        self.poller = poller
        self.producer = Producer(
            {"bootstrap.servers": broker_address, "linger.ms": 5, "enable.idempotence": True}
        )
        self.client = client
        self.every_s = every_s
        self.topic = topic
        self.dead_topic = dead_topic
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self.rounds = 0

    def trigger(self) -> None:
        self._wake.set()

    def run(self) -> None:
        if self.before is not None:
            try:
                self.before(self)
            except Exception:  # the poller keeps its schedule without it
                logger.exception("news poller start-up step failed")
        while not self.stop_event.is_set():
            try:
                poll_once(
                    self.poller, self.producer, self.client, topic=self.topic, dead_topic=self.dead_topic
                )
            except Exception:  # ClickHouse away for the poll record: the entries went out
                logger.exception("news poll round failed")
            self.rounds += 1
            self._wake.wait(self.every_s)
            self._wake.clear()

    def stop(self) -> None:
        self.stop_event.set()
        self._wake.set()


def poller_from_settings(settings: Any) -> RssPoller:
    from streams.rss import parse_feeds

    return RssPoller(
        parse_feeds(settings.news_rss_feeds),
        timeout_s=settings.news_fetch_timeout,
        max_bytes=settings.news_max_feed_bytes,
        backoff_base_s=settings.news_backoff_base,
        backoff_max_s=settings.news_backoff_max,
    )
