"""The news service's start-up bootstrap (NEWS_STARTUP_BOOTSTRAP_*) on the real broker and chDB:
it runs when the store is empty and not otherwise, in the poller thread before its first poll."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, TopicPartition

from fakes.rss import FakeFeeds, archived, coindesk
from news.service import startup_bootstrap
from ohlcv.infra.kafka import ensure_topics
from schemas.topics import TopicSpec
from streams.news_poller import NewsPollerThread
from streams.rss import Feed, RssPoller

pytestmark = [pytest.mark.broker, pytest.mark.clickhouse]


def _settings(days: float) -> SimpleNamespace:
    return SimpleNamespace(news_startup_bootstrap_days=days, news_startup_bootstrap_rounds=3,
                           news_startup_bootstrap_interval=0.0, news_startup_bootstrap_min_articles=None,
                           news_backfill_max_pages=5)  # fmt: skip


def _produced(broker: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": broker, "group.id": uuid.uuid4().hex, "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        n = 0
        while got := c.consume(500, 2):
            n += sum(m.error() is None for m in got)
        return n
    finally:
        c.close()


def test_start_up_bootstrap_fills_an_empty_store_only(broker: str, ch: Client) -> None:
    raw = f"t{uuid.uuid4().hex[:6]}.news.raw"
    ensure_topics(broker, (TopicSpec(raw, "", {}, "", partitions=1),))
    with FakeFeeds() as feeds:
        for path, body in archived(coindesk(), "/c.xml", pages=3, per_page=2).items():
            feeds.set(path, body)
        poller = RssPoller([Feed("coindesk", feeds.url("/c.xml"))])
        t = NewsPollerThread(poller, broker, ch, 60, topic=raw, dead_topic=raw + ".dead")
        startup_bootstrap(_settings(0))(t)  # off
        assert _produced(broker, raw) == 0
        startup_bootstrap(_settings(3650))(t)
        # no topology stores anything here: 3 rounds, each a live poll; round 1's poll and
        # backfill (3 pages: 3 + 2 + 2 stories), then 304s and the same stories again
        polls = ch.query("SELECT status FROM news_polls ORDER BY at").result_rows
        assert polls == [("ok",), ("not_modified",), ("not_modified",)]
        assert _produced(broker, raw) == 3 + 7 * 3
        # a store with a story: nothing runs
        ch.command(
            "INSERT INTO news_articles (article_id, source, published_at, fetched_at, ingested_at) "
            "VALUES ('x', 'coindesk', now64(3), now64(3), now64(3))"
        )
        startup_bootstrap(_settings(3650))(t)
        assert _produced(broker, raw) == 3 + 7 * 3
