"""The news path on the real broker and chDB, fed by the fake feed host serving the real CoinDesk
feed: dedup exact across polls, two sources, a restart and a replay; source health from the
stored polls; the unique stories on news.articles."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, Producer, TopicPartition

from fakes.rss import FakeFeeds, archived, coindesk, mirrored, with_new_items
from news.backfill import BootstrapConfig, backfill_once, bootstrap
from news.health import HealthConfig
from news.store import source_healths
from ohlcv.infra.clickhouse import make_client as ch_factory
from ohlcv.infra.kafka import ensure_topics
from schemas.topics import DEAD_LETTER, NEWS_ARTICLES, NEWS_RAW, TopicSpec
from streams.news_poller import poll_once
from streams.rss import Feed, RssPoller
from topologies.runner import TopologyConfig, build_news_application

pytestmark = [pytest.mark.broker, pytest.mark.clickhouse, pytest.mark.slow]


def _topics(broker: str, prefix: str) -> dict[str, str]:
    names = {
        "raw": prefix + NEWS_RAW.name,
        "articles": prefix + NEWS_ARTICLES.name,
        "dead": prefix + DEAD_LETTER.name,
    }
    ensure_topics(broker, tuple(TopicSpec(n, "", {}, "", partitions=1) for n in names.values()))
    return names


def _run(
    broker: str, ch_url: str, ch_db: str, topics: dict[str, str], group: str, state: Path, timeout: float = 4
) -> None:
    cfg = TopologyConfig(
        broker_address=broker,
        clickhouse_url=ch_url,
        clickhouse_database=ch_db,
        consumer_group=group,
        state_dir=state,
        news_raw_topic=topics["raw"],
        news_articles_topic=topics["articles"],
        symbols=("XRPUSDT", "BTCUSDT"),
    )
    build_news_application(cfg).run(timeout=timeout)


def _entries(ch: Client) -> list[tuple[Any, ...]]:
    return ch.query(
        "SELECT source, poll_id, duplicate, duplicate_of_source, article_id FROM news_entries FINAL "
        "ORDER BY fetched_at, source, entry_key"
    ).result_rows


def _articles(ch: Client) -> dict[str, dict[str, Any]]:
    res = ch.query("SELECT * FROM news_articles FINAL")
    return {r[0]: dict(zip(res.column_names, r, strict=True)) for r in res.result_rows}


def test_dedup_across_polls_sources_restart_and_replay(
    broker: str, ch: Client, ch_url: str, ch_db: str, tmp_path: Path
) -> None:
    topics = _topics(broker, f"t{uuid.uuid4().hex[:6]}.")
    p = Producer({"bootstrap.servers": broker})
    with FakeFeeds() as feeds:
        poller = RssPoller(
            [
                Feed("coindesk", feeds.set("/c.xml", coindesk())),
                Feed("mirror", feeds.set("/m.xml", mirrored(coindesk()))),
            ]
        )
        first = poll_once(poller, p, ch, topic=topics["raw"], dead_topic=topics["dead"])
        assert [len(r.entries) for r in first] == [3, 3]
        _run(broker, ch_url, ch_db, topics, "news-a", tmp_path / "s1")
        arts = _articles(ch)
        assert len(arts) == 3 and {a["source"] for a in arts.values()} == {"coindesk"}
        rows = _entries(ch)
        assert [(s, d, of) for s, _, d, of, _ in rows if s == "mirror"] == [("mirror", True, "coindesk")] * 3
        a = next(x for x in arts.values() if x["title"].startswith("Circle and Tether"))
        assert a["summary"].startswith("The stablecoin issuer blacklisted") and "<" not in a["summary"]
        assert -1 <= a["sentiment"] <= 1 and a["sentiment_label"] in ("positive", "negative", "neutral")
        assert not a["published_estimated"]

        # unchanged feeds: 304s, nothing new; then two new stories in coindesk's feed
        again = poll_once(poller, p, ch, topic=topics["raw"], dead_topic=topics["dead"])
        assert [r.status for r in again] == ["not_modified", "not_modified"]
        feeds.set("/c.xml", with_new_items(coindesk(), 2))
        poll_once(poller, p, ch, topic=topics["raw"], dead_topic=topics["dead"])
        _run(broker, ch_url, ch_db, topics, "news-a", tmp_path / "s1")
        arts = _articles(ch)
        assert len(arts) == 5
        fresh = [x for x in arts.values() if x["title"].startswith("Fresh story")]
        assert len(fresh) == 2 and all(
            x["symbols"] == ["BTCUSDT", "XRPUSDT"] for x in fresh
        )  # "XRP and bitcoin"
        polls = {}
        for s, poll, d, _, _ in _entries(ch):
            polls.setdefault((s, poll), []).append(d)
        third = [v for (s, _), v in polls.items() if s == "coindesk" and len(v) == 5]
        assert len(third) == 1 and third[0].count(False) == 2  # dedup ratio of that poll: 2 / 5

        # a restart: a new process (fresh poller, no ETag; a new dedup memory seeded from chDB)
        fresh_poller = RssPoller([Feed("coindesk", feeds.url("/c.xml")), Feed("mirror", feeds.url("/m.xml"))])
        poll_once(fresh_poller, p, ch, topic=topics["raw"], dead_topic=topics["dead"])
        _run(broker, ch_url, ch_db, topics, "news-a", tmp_path / "s2")
        assert len(_articles(ch)) == 5
        before = _entries(ch)
        assert sum(1 for _, _, d, _, _ in before if not d) == 5  # every re-polled entry was a duplicate

        # a replay of the whole topic (another consumer group): the same verdicts, the same rows
        _run(broker, ch_url, ch_db, topics, "news-replay", tmp_path / "s3")
        assert _entries(ch) == before and len(_articles(ch)) == 5

    # the unique stories went out once each on news.articles (the replay re-published them: at-least-once)
    c = Consumer({"bootstrap.servers": broker, "group.id": uuid.uuid4().hex, "enable.auto.commit": False})
    c.assign([TopicPartition(topics["articles"], 0, 0)])
    got = [orjson.loads(m.value()) for m in c.consume(100, 5) if m.error() is None]
    c.close()
    assert {g["article_id"] for g in got} == set(_articles(ch)) and len(got) == 10

    # source health from the stored polls
    h = {x.source: x for x in source_healths(ch, HealthConfig(stall_s=3600, ratio_streak=2, min_ratio=0.5))}
    assert h["coindesk"].dedup_last_ratio == 0.0 and h["mirror"].dedup_last_ratio == 0.0
    assert h["mirror"].last_unique_at is None and "low_ratio" in h["mirror"].anomalies
    assert h["coindesk"].polls == 4 and not h["coindesk"].stalled and h["coindesk"].error_streak == 0


def test_backfill_reads_older_pages_once_and_leaves_source_health_alone(
    broker: str, ch: Client, ch_url: str, ch_db: str, tmp_path: Path
) -> None:
    topics = _topics(broker, f"t{uuid.uuid4().hex[:6]}.")
    p = Producer({"bootstrap.servers": broker})
    hour = 3_600_000
    with FakeFeeds() as feeds:
        for path, body in archived(coindesk(), "/c.xml", pages=4, per_page=3).items():
            feeds.set(path, body)
        poller = RssPoller(
            [Feed("coindesk", feeds.url("/c.xml")), Feed("mirror", feeds.set("/m.xml", mirrored(coindesk())))]
        )
        poll_once(poller, p, ch, topic=topics["raw"], dead_topic=topics["dead"])
        _run(broker, ch_url, ch_db, topics, "news-b", tmp_path / "s")
        assert len(_articles(ch)) == 3
        cfg = HealthConfig(stall_s=3600)
        before = {h.source: h for h in source_healths(ch, cfg)}

        # the range reaches 36 h below the feed's newest item: the real items (minutes apart),
        # pages 2 and 3 (archive stories 6 h apart), then page 4 starts below the range
        top = int(
            ch.query("SELECT toUnixTimestamp64Milli(max(published_at)) FROM news_articles FINAL").result_rows[
                0
            ][0]
        )
        days = (36 * hour + 20 * 60_000) / 86_400_000
        results, new = backfill_once(
            poller, p, ch, days, now_ms=top, topic=topics["raw"], dead_topic=topics["dead"]
        )
        r = {x.feed.name: x for x in results}
        assert (r["coindesk"].pages, len(r["coindesk"].entries), r["coindesk"].older_than_range) == (4, 9, 3)
        assert r["coindesk"].stopped == "reached stories older than the range"
        assert (r["mirror"].pages, len(r["mirror"].entries)) == (1, 3) and "no older page" in (
            r["mirror"].stopped or ""
        )
        assert new == [6, 0]  # the 3 real stories were stored; the mirror carries only them
        _run(broker, ch_url, ch_db, topics, "news-b", tmp_path / "s")
        arts = _articles(ch)
        assert len(arts) == 9
        assert sorted(a["origin"] for a in arts.values()) == ["backfill"] * 6 + ["poll"] * 3
        origins = ch.query(
            "SELECT origin, count() FROM news_entries FINAL GROUP BY origin ORDER BY origin"
        ).result_rows
        assert origins == [("backfill", 12), ("poll", 6)]
        # a backfill is not the feed's live flow: no poll recorded, the last unique poll story unchanged
        after = {h.source: h for h in source_healths(ch, cfg)}
        for s in ("coindesk", "mirror"):
            assert (after[s].polls, after[s].last_unique_at) == (before[s].polls, before[s].last_unique_at)

        # again: nothing new, nothing stored twice
        _, again = backfill_once(
            poller, p, ch, days, now_ms=top, topic=topics["raw"], dead_topic=topics["dead"]
        )
        assert again == [0, 0]
        _run(broker, ch_url, ch_db, topics, "news-b", tmp_path / "s")
        assert len(_articles(ch)) == 9

        # a page failing with Retry-After: the pages before it are kept, the feed backs off
        feeds.fail("/c.xml?page=3", 503, times=1, retry_after="30")
        results, _ = backfill_once(
            poller, p, ch, days, now_ms=top, topic=topics["raw"], dead_topic=topics["dead"]
        )
        bad = results[0]
        assert (bad.status, bad.pages, len(bad.entries), bad.error, bad.retry_in_s) == (
            "error",
            2,
            6,
            "HTTP 503",
            30,
        )
        results, _ = backfill_once(poller, p, ch, days, now_ms=top)
        assert results[0].status == "backoff" and 29 < (results[0].retry_in_s or 0) <= 30
        assert results[1].status == "ok"  # the other feed keeps flowing


def test_bootstrap_rounds_until_a_plateau_while_the_topology_stores(
    broker: str, ch: Client, ch_url: str, ch_db: str, tmp_path: Path
) -> None:
    topics = _topics(broker, f"t{uuid.uuid4().hex[:6]}.")
    p = Producer({"bootstrap.servers": broker})
    with FakeFeeds() as feeds:
        for path, body in archived(coindesk(), "/c.xml", pages=3, per_page=3).items():
            feeds.set(path, body)
        poller = RssPoller([Feed("coindesk", feeds.url("/c.xml"))])
        out: dict[str, Any] = {}
        seen: list[dict[str, Any]] = []
        cfg = BootstrapConfig(rounds=6, sleep_seconds=1.5, recent_days=3650)
        own = ch_factory(ch_url, ch_db)  # a client per thread

        def work() -> None:
            kw = {"topic": topics["raw"], "dead_topic": topics["dead"]}
            out.update(bootstrap(poller, p, own, cfg, on_round=seen.append, **kw))

        t = threading.Thread(target=work)
        t.start()
        _run(broker, ch_url, ch_db, topics, "news-c", tmp_path / "s", timeout=6)
        t.join(30)
    rounds = out["rounds"]
    assert seen == rounds and out["stopped"] == "plateau: two rounds in a row found nothing new"
    assert [(x["inserted_live"], x["inserted_backfill"]) for x in rounds] == [(3, 6), (0, 0), (0, 0)]
    # stored_total is what the store held at each round's end: the topology stores behind the
    # rounds (its group join alone takes seconds on the embedded broker), never more than 9
    totals = [x["stored_total"] for x in rounds]
    assert (
        totals == sorted(totals)
        and totals[-1] <= 9 == len(_articles(ch))
        and rounds[0]["backfill_pages"] == 3
    )
    # the live polls are recorded as polls (the 2nd and 3rd answered 304), the backfill's are not
    assert ch.query("SELECT status FROM news_polls ORDER BY at").result_rows == [
        ("ok",),
        ("not_modified",),
        ("not_modified",),
    ]

    # a second bootstrap stops at min_total
    again = bootstrap(
        poller, p, ch, BootstrapConfig(rounds=4, sleep_seconds=0, recent_days=3650, min_total=5)
    )
    assert again["stopped"] == "min_total 5 reached (9 stored)" and len(again["rounds"]) == 1
