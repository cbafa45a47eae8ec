"""News routes over real chDB: stories from the real CoinDesk feed (polled from the fake feed
host, judged by the news step, stored by its sink), the delta contract, search, health."""

from __future__ import annotations

import functools
import time
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from fastapi.testclient import TestClient

from api.main import create_app
from fakes.rss import FakeFeeds, archived, coindesk, mirrored, with_new_items
from ohlcv.infra.clickhouse import make_client
from sinks.news import NewsRows
from streams.news_poller import record_polls
from streams.rss import Feed, RssPoller
from tests.api.conftest import AUTH, api_settings
from topologies.news_logic import NewsDedup, Sentiment, asset_patterns, process

pytestmark = [pytest.mark.clickhouse, pytest.mark.broker]


def _ingest(ch: Client, poller: RssPoller, dedup: NewsDedup, sentiment: Sentiment) -> None:
    results = poller.poll_all()
    record_polls(ch, poller, results)
    entries, articles = [], []
    for r in results:
        for e in r.entries:
            seen, art = process(
                e.model_dump(), dedup, sentiment, asset_patterns(["XRPUSDT"]), int(time.time() * 1000)
            )
            entries.append(seen)
            if art is not None:
                articles.append(art)
    NewsRows(entries, articles).write(ch)


@pytest.fixture
def news_api(ch: Client, ch_url: str, ch_db: str, broker: str) -> Any:
    with FakeFeeds() as feeds:
        urls = [
            f"coindesk={feeds.set('/c.xml', coindesk())}",
            f"mirror={feeds.set('/m.xml', mirrored(coindesk()))}",
        ]
        settings = api_settings(symbols=["XRPUSDT"], news_rss_feeds=urls)
        app = create_app(settings, broker_address=broker,
                         clickhouse_client_factory=functools.partial(make_client, ch_url, ch_db))  # fmt: skip
        with TestClient(app) as client:
            yield client, feeds, ch


def test_recent_delta_search_article_sources_summary_and_manual_fetch(news_api: Any) -> None:
    api, feeds, ch = news_api
    poller = RssPoller([Feed("coindesk", feeds.url("/c.xml")), Feed("mirror", feeds.url("/m.xml"))])
    dedup, sentiment = NewsDedup(), Sentiment()
    _ingest(ch, poller, dedup, sentiment)
    r = api.get("/api/news/recent", headers=AUTH).json()
    assert r["count"] == 3 and r["articles"][0]["published_at"] >= r["articles"][-1]["published_at"]
    since = r["next_since_ts"]
    assert api.get("/api/news/recent", params={"since_ts": since}, headers=AUTH).json() == {
        "articles": [], "count": 0, "next_since_ts": since}  # fmt: skip
    feeds.set("/c.xml", with_new_items(coindesk(), 1))
    time.sleep(0.01)
    _ingest(ch, poller, dedup, sentiment)
    delta = api.get("/api/news/recent", params={"since_ts": since, "summary_only": True}, headers=AUTH).json()
    assert [a["title"] for a in delta["articles"]] == ["Fresh story 0: XRP and bitcoin move"]
    assert "summary" not in delta["articles"][0] and delta["articles"][0]["symbols"] == ["XRPUSDT"]
    assert delta["next_since_ts"] > since
    # search
    s = api.get("/api/news/search", params={"q": "circle and tether", "days": 3650}, headers=AUTH).json()
    assert s["total"] == 1 and s["articles"][0]["title"].startswith("Circle and Tether")
    assert api.get("/api/news/search", params={"q": "%", "days": 3650}, headers=AUTH).status_code == 400
    assert api.get("/api/news/search", params={"q": "%%", "days": 3650}, headers=AUTH).json()["total"] == 0
    assert api.get("/api/news/search", params={"q": "a"}, headers=AUTH).status_code == 400
    # one article
    aid = s["articles"][0]["article_id"]
    one = api.get(f"/api/news/article/{aid}", headers=AUTH).json()
    assert one["summary"].startswith("The stablecoin issuer") and one["source"] == "coindesk"
    assert api.get("/api/news/article/nope", headers=AUTH).status_code == 404
    # sources: the mirror carried only stories coindesk had first
    src = {
        x["source"]: x
        for x in api.get("/api/news/sources", params={"include_history": True}, headers=AUTH).json()
    }
    assert src["mirror"]["dedup_last_ratio"] == 0.0 and src["mirror"]["last_unique_at"] is None
    assert src["coindesk"]["dedup_last_ratio"] == pytest.approx(1 / 4)  # the second poll: 1 new of 4
    assert len(src["coindesk"]["history"]) == 2 and src["coindesk"]["health_score"] <= 1
    summ = api.get("/api/news/summary", params={"window_minutes": 60}, headers=AUTH).json()
    assert summ["total"] == 4 and summ["by_source"] == {"coindesk": 4}
    assert summ["positive"] + summ["negative"] + summ["neutral"] == 4
    # a manual fetch polls the configured feeds now and puts them on news.raw
    got = api.post("/api/news/fetch/manual", headers=AUTH).json()["polled"]
    assert [(g["source"], g["status"], g["entries"]) for g in got] == [
        ("coindesk", "ok", 4),
        ("mirror", "ok", 3),
    ]
    dbg = api.get("/api/news/debug", params={"verbose": True}, headers=AUTH).json()
    assert (
        dbg["sources"] == ["coindesk", "mirror"] and dbg["fetch_runs"] == 6
    )  # 3 rounds (one manual) x 2 feeds
    # judged entries: 3 + 3, then coindesk's 4 (the mirror answered 304); the manual fetch's went
    # to news.raw, which no topology reads in this test
    assert dbg["articles_ingested"] == 4 and dbg["entries_seen"] == 10
    assert (
        dbg["verbose"]["coindesk"]["last_status"] == "ok" and dbg["verbose"]["coindesk"]["last_error"] is None
    )
    assert api.get("/api/news/recent", headers={}).status_code == 401


def test_backfill_and_bootstrap_routes(news_api: Any) -> None:
    api, feeds, _ = news_api
    for path, body in archived(coindesk(), "/c.xml", pages=3, per_page=2).items():
        feeds.set(path, body)
    r = api.post("/api/news/backfill", params={"days": 365}, headers=AUTH)
    assert r.status_code == 200, r.text
    b = r.json()
    by = {f["source"]: f for f in b["feeds"]}
    assert (by["coindesk"]["pages"], by["coindesk"]["entries"], by["coindesk"]["new"]) == (3, 7, 7)
    assert by["mirror"]["new"] == 0 and by["mirror"]["entries"] == 3  # the same stories, counted once
    assert b["new"] == 7 and "no older page" in by["coindesk"]["stopped"]
    assert api.post("/api/news/backfill", params={"days": 0}, headers=AUTH).status_code == 422
    assert api.post("/api/news/bootstrap", json={"rounds": 0}, headers=AUTH).status_code == 422
    assert api.post("/api/news/bootstrap", json={"nope": 1}, headers=AUTH).status_code == 422

    r = api.post(
        "/api/news/bootstrap", json={"rounds": 3, "sleep_seconds": 0.5, "recent_days": 365}, headers=AUTH
    )
    assert r.status_code == 202 and r.json()["bootstrap_running"]
    busy = api.post("/api/news/bootstrap", headers=AUTH)
    assert busy.status_code == 409 and busy.json()["job"]["bootstrap_running"]
    deadline = time.monotonic() + 30
    while (job := api.get("/api/news/bootstrap", headers=AUTH).json())["bootstrap_running"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # no topology runs here: nothing is stored, so every round finds the same stories new to
    # the store but not to the bootstrap, which counts each once
    assert [(x["inserted_live"], x["inserted_backfill"]) for x in job["rounds"]] == [(3, 4), (0, 0), (0, 0)]
    assert job["stopped"] == "plateau: two rounds in a row found nothing new" and job["error"] is None
    assert job["bootstrap_finished_ts"] >= job["bootstrap_started_ts"]
    v = api.get("/api/news/debug", params={"verbose": True}, headers=AUTH).json()["verbose"]
    assert v["bootstrap_running"] is False and v["bootstrap_finished_ts"] == job["bootstrap_finished_ts"]


def test_backfill_and_bootstrap_need_a_feed(ch: Client, ch_url: str, ch_db: str, broker: str) -> None:
    app = create_app(api_settings(symbols=["XRPUSDT"]), broker_address=broker,
                     clickhouse_client_factory=functools.partial(make_client, ch_url, ch_db))  # fmt: skip
    with TestClient(app) as api:
        for path in ("/api/news/backfill", "/api/news/bootstrap"):
            r = api.post(path, headers=AUTH)
            assert r.status_code == 409 and "NEWS_RSS_FEEDS" in r.json()["detail"]
