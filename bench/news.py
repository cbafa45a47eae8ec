"""News: stories/s through the news topology (dedup + sentiment + sink) against feedparser's parse
rate of the same feed (the ceiling), and poll -> stored latency.

Run: ``.venv/bin/python -m bench.news``. Prints one JSON object.

- The feed: the real CoinDesk feed with 3,000 stories derived from its first one
  (``fakes.rss.with_new_items``: new titles, links and guids), 3.5 MB.
- Ceiling: ``feedparser.parse`` of that body, stories/s.
- Step alone: ``topologies.news_logic.process`` (keys, dedup, plain text, VADER, tags) over the
  parsed entries, then their ``news_entries``/``news_articles`` insert into chDB.
- Topology: the entries produced onto ``news.raw``; the news Application alone, from its first
  record to its last ClickHouse write (the 1 s checkpoint wait included).
- Latency: one new story every 0.5 s served by the fake feed host, polled every 0.5 s by the
  poller thread, with the Application running; per story, stored-in-chDB time (polled by a
  reader every 50 ms) minus the poll's fetch time.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bench.api_bench import pct
from fakes.rss import FakeFeeds, coindesk, with_new_items
from ohlcv.infra.broker import EmbeddedBroker
from ohlcv.infra.clickhouse import make_client, migrate
from ohlcv.infra.kafka import ensure_topics
from schemas.topics import DEAD_LETTER, NEWS_ARTICLES, NEWS_RAW, TopicSpec
from sinks.news import NewsRows
from streams.news_poller import NewsPollerThread
from streams.rss import Feed, RssPoller, publish
from topologies.news_logic import NewsDedup, Sentiment, asset_patterns, process
from topologies.runner import TopologyConfig, build_news_application

N = 3000


def news_topics(address: str, tag: str) -> dict[str, str]:
    """Fresh news.raw / news.articles / dead-letter topics of one run."""
    prefix = f"{tag}{uuid.uuid4().hex[:6]}."
    topics = {
        "raw": prefix + NEWS_RAW.name,
        "articles": prefix + NEWS_ARTICLES.name,
        "dead": prefix + DEAD_LETTER.name,
    }
    ensure_topics(address, tuple(TopicSpec(n, "", {}, "", partitions=1) for n in topics.values()))
    return topics


def main() -> None:
    import feedparser

    body = with_new_items(coindesk(), N)
    out: dict[str, Any] = {"stories": N + 3, "feed_bytes": len(body)}
    t0 = time.perf_counter()
    feedparser.parse(body.encode())
    out["feedparser_stories_per_s"] = round((N + 3) / (time.perf_counter() - t0))
    with FakeFeeds() as feeds, EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as d:
        url, db = f"chdb://{d}/ch", "bench"
        ch = make_client(url, db)
        migrate(ch)
        poller = RssPoller([Feed("coindesk", feeds.set("/big.xml", body))], max_bytes=50_000_000)
        result = poller.poll_all()[0]
        entries = [e.model_dump() for e in result.entries]
        dedup, sentiment, assets = NewsDedup(), Sentiment(), asset_patterns(["XRPUSDT", "BTCUSDT"])
        t0 = time.perf_counter()
        judged = [process(e, dedup, sentiment, assets, 0) for e in entries]
        step_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        NewsRows([j[0] for j in judged], [j[1] for j in judged if j[1]]).write(ch)
        out["step"] = {
            "stories_per_s": round(len(entries) / step_s),
            "insert_s": round(time.perf_counter() - t0, 3),
        }
        ch.command("TRUNCATE TABLE news_articles")
        ch.command("TRUNCATE TABLE news_entries")

        topics = news_topics(broker.address, "b")
        p = Producer({"bootstrap.servers": broker.address, "linger.ms": 5})
        publish(p, result, topic=topics["raw"], dead_topic=topics["dead"])
        p.flush(30)
        cfg = TopologyConfig(
            broker_address=broker.address,
            clickhouse_url=url,
            clickhouse_database=db,
            consumer_group=f"n-{uuid.uuid4().hex[:6]}",
            state_dir=Path(d) / "state",
            news_raw_topic=topics["raw"],
            news_articles_topic=topics["articles"],
            symbols=("XRPUSDT",),
        )
        app = build_news_application(cfg)
        first: list[float] = []
        last: list[float] = []
        app._on_message_processed = lambda *a: first or first.append(time.perf_counter())
        write = NewsRows.write

        def timed(self: NewsRows, client: Any) -> None:
            write(self, client)
            last[:] = [time.perf_counter()]

        NewsRows.write = timed  # type: ignore[method-assign]
        try:
            app.run(timeout=4)
        finally:
            NewsRows.write = write  # type: ignore[method-assign]
        stored = ch.query("SELECT count() FROM news_articles FINAL").result_rows[0][0]
        assert stored == len(entries), (stored, len(entries))
        out["topology_stories_per_s"] = round(len(entries) / (last[0] - first[0]))
        out["topology_share_of_parse"] = round(
            out["topology_stories_per_s"] / out["feedparser_stories_per_s"], 3
        )
        out["latency"] = latency(broker.address, url, db, d, feeds)
    print(json.dumps(out, indent=1))


def latency(address: str, url: str, db: str, d: str, feeds: FakeFeeds, n: int = 40) -> dict[str, Any]:
    ch = make_client(url, db)
    ch.command("TRUNCATE TABLE news_articles")
    topics = news_topics(address, "l")
    cfg = TopologyConfig(
        broker_address=address,
        clickhouse_url=url,
        clickhouse_database=db,
        consumer_group=f"l-{uuid.uuid4().hex[:6]}",
        state_dir=Path(d) / "state-l",
        news_raw_topic=topics["raw"],
        news_articles_topic=topics["articles"],
    )
    app = build_news_application(cfg)
    feed = feeds.set("/live.xml", coindesk())
    poller = NewsPollerThread(
        RssPoller([Feed("live", feed)]), address, None, 0.5, topic=topics["raw"], dead_topic=topics["dead"]
    )
    stored: dict[str, float] = {}
    done = threading.Event()

    def publish_and_watch() -> None:
        for k in range(n):
            feeds.set("/live.xml", with_new_items(coindesk(), k + 1))
            time.sleep(0.5)
        deadline = time.monotonic() + 10
        while len(stored) < n + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        done.set()
        app.stop()

    def watch() -> None:
        r = make_client(url, db)
        while not done.is_set():
            for title, fetched in r.query(
                "SELECT title, toUnixTimestamp64Milli(fetched_at) FROM news_articles"
            ).result_rows:
                stored.setdefault(title, time.time() * 1000 - fetched)
            time.sleep(0.05)

    poller.start()
    threads = [
        threading.Thread(target=publish_and_watch, daemon=True),
        threading.Thread(target=watch, daemon=True),
    ]
    for t in threads:
        t.start()
    app.run()
    poller.stop()
    ms = sorted(v for k, v in stored.items() if k.startswith("Fresh story"))
    return {
        "stories": len(ms),
        "poll_every_s": 0.5,
        "p50_ms": round(pct(ms, 0.5), 1),
        "p99_ms": round(pct(ms, 0.99), 1),
        "max_ms": round(ms[-1], 1),
    }


if __name__ == "__main__":
    main()
