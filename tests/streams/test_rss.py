"""The RSS/Atom source against a fake feed host on loopback serving the real CoinDesk feed and
variations derived from it: conditional GET, backoff with Retry-After, bad feeds with reasons,
Atom, and the entries on the real broker's ``news.raw`` (refused ones as dead letters)."""

from __future__ import annotations

import uuid

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from fakes.rss import (
    FakeFeeds,
    as_atom,
    coindesk,
    mirrored,
    truncated,
    with_new_items,
    without_links_and_guids,
)
from ohlcv.infra.broker import EMBEDDED_CONSUMER_CONFIG
from ohlcv.infra.kafka import ensure_topics
from schemas.topics import DEAD_LETTER, NEWS_RAW, TopicSpec
from streams.rss import Feed, RssPoller, parse_feeds, publish


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def feeds() -> FakeFeeds:
    with FakeFeeds() as f:
        yield f


def test_the_real_feed_its_entries_and_a_304_when_unchanged(feeds: FakeFeeds) -> None:
    url = feeds.set("/coindesk.xml", coindesk())
    poller = RssPoller([Feed("coindesk", url)])
    first = poller.poll_all()[0]
    assert first.status == "ok" and first.http_status == 200 and len(first.entries) == 3
    e = first.entries[0]
    assert e.title == "Circle and Tether step in to freeze hacker wallet after massive Bitget crypto heist"
    assert e.guid == "a0b4a6ba-5569-4fef-940c-e402f9698d89" and e.link.startswith(
        "https://www.coindesk.com/markets/"
    )
    assert e.published_at == 1_790_347_313_000  # Fri, 25 Sep 2026 14:41:53 +0000
    assert e.author == "Oliver Knight" and "Circle" in e.categories and e.feed_format == "rss20"
    assert {x.poll_id for x in first.entries} == {first.poll_id} and e.poll_entries == 3
    again = poller.poll_all()[0]
    assert again.status == "not_modified" and again.http_status == 304 and again.entries == []
    assert feeds.hits("/coindesk.xml") == (2, 1)  # the second request was conditional
    feeds.set("/coindesk.xml", with_new_items(coindesk(), 2))
    third = poller.poll_all()[0]
    assert third.status == "ok" and len(third.entries) == 5
    assert third.entries[0].title == "Fresh story 0: XRP and bitcoin move"


def test_atom_and_a_second_source_with_the_same_stories(feeds: FakeFeeds) -> None:
    poller = RssPoller([Feed("atom", feeds.set("/atom.xml", as_atom(coindesk()), "application/atom+xml")),
                        Feed("mirror", feeds.set("/mirror.xml", mirrored(coindesk())))])  # fmt: skip
    atom, mirror = poller.poll_all()
    assert atom.status == "ok" and atom.entries[0].feed_format == "atom10" and len(atom.entries) == 3
    assert atom.entries[0].published_at is None and atom.entries[0].updated_at == 1_790_347_313_000
    assert [e.link for e in mirror.entries] == [e.link for e in atom.entries]
    assert {e.guid for e in mirror.entries}.isdisjoint({e.guid for e in atom.entries})


def test_bad_feeds_fail_with_a_reason_and_back_off(feeds: FakeFeeds) -> None:
    clock = Clock()
    poller = RssPoller(
        [Feed("broken", feeds.set("/broken.xml", truncated(coindesk()))),
         Feed("html", feeds.set("/html", "<html><body>Sorry, down</body></html>", "text/html")),
         Feed("slow", feeds.set("/slow.xml", coindesk())),
         Feed("huge", feeds.set("/huge.xml", coindesk() + " " * 3_000_000)),
         Feed("gone", feeds.url("/missing.xml")),
         Feed("ok", feeds.set("/ok.xml", coindesk()))],
        timeout_s=0.5, max_bytes=2_000_000, backoff_base_s=30, backoff_max_s=100, clock=clock,
    )  # fmt: skip
    feeds.delay("/slow.xml", 1.5)
    got = {r.feed.name: r for r in poller.poll_all()}
    assert got["broken"].status == "error" and "malformed feed" in (got["broken"].error or "")
    assert got["html"].status == "error" and "not an RSS or Atom feed (text/html" in (got["html"].error or "")
    assert got["slow"].status == "error" and "timed out after 0.5s" in (got["slow"].error or "")
    assert got["huge"].status == "error" and "NEWS_MAX_FEED_BYTES=2000000" in (got["huge"].error or "")
    assert got["gone"].status == "error" and got["gone"].http_status == 404
    assert got["ok"].status == "ok" and len(got["ok"].entries) == 3  # the others did not stop it
    # inside the backoff: skipped, with the time left and the last error
    clock.t += 10
    skipped = poller.poll(poller.feeds[0])
    assert skipped.status == "backoff" and skipped.retry_in_s == 20 and "malformed" in (skipped.error or "")
    # the backoff doubles per failure, capped
    for expect in (60, 100, 100):
        clock.t += 1000
        r = poller.poll(poller.feeds[0])
        assert r.status == "error" and r.retry_in_s == expect
    assert poller.state["broken"].error_streak == 4
    # recovered: the streak and the backoff reset
    feeds.set("/broken.xml", coindesk())
    clock.t += 1000
    assert poller.poll(poller.feeds[0]).status == "ok" and poller.state["broken"].error_streak == 0


def test_429_and_503_honour_retry_after(feeds: FakeFeeds) -> None:
    clock = Clock()
    url = feeds.set("/limited.xml", coindesk())
    poller = RssPoller([Feed("limited", url)], backoff_base_s=30, clock=clock)
    feeds.fail("/limited.xml", 429, times=1, retry_after="120")
    r = poller.poll_all()[0]
    assert (r.status, r.http_status, r.retry_in_s) == ("error", 429, 120.0)
    feeds.fail("/limited.xml", 503, times=1)
    clock.t += 121
    r = poller.poll_all()[0]
    assert (r.status, r.http_status, r.retry_in_s) == ("error", 503, 60.0)  # no Retry-After: 30 x 2
    clock.t += 61
    assert poller.poll_all()[0].status == "ok"


@pytest.mark.broker
def test_entries_reach_news_raw_and_refused_ones_the_dead_letters(feeds: FakeFeeds, broker: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}."
    raw, dead = prefix + NEWS_RAW.name, prefix + DEAD_LETTER.name
    ensure_topics(
        broker, (TopicSpec(raw, "", {}, "", partitions=1), TopicSpec(dead, "", {}, "", partitions=1))
    )
    poller = RssPoller([Feed("coindesk", feeds.set("/c.xml", without_links_and_guids(coindesk())))])
    result = poller.poll_all()[0]
    assert len(result.entries) == 2 and len(result.refused) == 1
    p = Producer({"bootstrap.servers": broker})
    assert publish(p, result, topic=raw, dead_topic=dead) == 2
    p.flush(10)
    c = Consumer({"bootstrap.servers": broker, "group.id": uuid.uuid4().hex, **EMBEDDED_CONSUMER_CONFIG})
    c.assign([TopicPartition(raw, 0, 0), TopicPartition(dead, 0, 0)])
    seen: dict[str, list[dict[str, object]]] = {raw: [], dead: []}
    for _ in range(200):
        m = c.poll(0.1)
        if m is not None and m.error() is None:
            seen[m.topic()].append(orjson.loads(m.value()))
        if len(seen[raw]) == 2 and len(seen[dead]) == 1:
            break
    c.close()
    assert [x["guid"] for x in seen[raw]] == [e.guid for e in result.entries]
    assert seen[raw][0]["source"] == "coindesk" and seen[raw][0]["poll_entries"] == 2
    (dl,) = seen[dead]
    assert "neither link nor guid" in str(dl["reason"]) and dl["stage"] == "news.rss"
    assert "Circle and Tether" in str(dl["payload"])  # the refused entry, kept


def test_feed_list_parsing() -> None:
    assert parse_feeds(
        ["coindesk=https://www.coindesk.com/arc/outboundfeeds/rss/", "https://x.example/feed"]
    ) == [
        Feed("coindesk", "https://www.coindesk.com/arc/outboundfeeds/rss/"),
        Feed("x.example", "https://x.example/feed"),
    ]
    with pytest.raises(ValueError, match="not an http"):
        parse_feeds(["ftp://x"])
    with pytest.raises(ValueError, match="unique"):
        parse_feeds(["a=http://x/1", "a=http://x/2"])
