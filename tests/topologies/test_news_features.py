"""News in the feature rows on the real broker and chDB: real XRP candles through the candles
and features topologies, stories made by the news step from the real CoinDesk feed (some stored
in news_articles before the start, some only on news.articles), with a three-hour hole in the
news. Checked against a reference written apart in pandas (a boolean mask per bar, and
``merge_asof`` for the last story before the close), then against the batch rebuild."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from clickhouse_connect.driver.client import Client
from confluent_kafka import Producer

from fakes.rss import FakeFeeds, coindesk, with_new_items
from sinks.news import NewsRows
from streams.rss import Feed, RssPoller
from tests.topologies.helpers import xrp_candles
from tests.topologies.pipeline import produce, run_topology, unique_topics
from topologies.feature_rebuild import rebuild_features
from topologies.news_features import NewsBook, NewsFeatureConfig
from topologies.news_logic import NewsDedup, Sentiment, asset_patterns, process

pytestmark = [pytest.mark.broker, pytest.mark.clickhouse, pytest.mark.slow]

CFG = NewsFeatureConfig(window_ms=2 * 3_600_000, delay_ms=30_000, stall_ms=3_600_000)


def _stories(t0: int) -> list[dict[str, Any]]:
    """The real feed's 3 stories and 40 new ones, as the news step judges them, first fetched at
    irregular times over 10 hours, nothing for the next 3, then over 6 more."""
    with FakeFeeds() as feeds:
        entries = (
            RssPoller([Feed("coindesk", feeds.set("/c.xml", with_new_items(coindesk(), 40)))])
            .poll_all()[0]
            .entries
        )
    dedup, sentiment, tags = NewsDedup(), Sentiment(), asset_patterns(["XRPUSDT"])
    out = [process(e.model_dump(), dedup, sentiment, tags, int(time.time() * 1000))[1] for e in entries]
    rng = np.random.default_rng(7)
    hour = 3_600_000
    at = np.sort(np.concatenate([rng.integers(0, 10 * hour, 28), rng.integers(13 * hour, 19 * hour, 15)]))
    stories = []
    for a, t in zip(out, at.tolist(), strict=True):
        assert a is not None
        stories.append({**a, "fetched_at": t0 + t, "ingested_at": t0 + t + 500})
    return stories


def _reference(stories: pd.DataFrame, rows: pd.DataFrame, step_of: dict[str, int]) -> pd.DataFrame:
    tau = rows["open_time"] + rows["interval"].map(step_of) - CFG.delay_ms
    xrp = stories[stories["symbols"].map(lambda s: "XRPUSDT" in s)]
    sent, count = [], []
    for t in tau:
        sel = xrp[(xrp["fetched_at"] > t - CFG.window_ms) & (xrp["fetched_at"] <= t)]
        count.append(len(sel))
        sent.append(sel["sentiment"].mean() if len(sel) else None)
    left = pd.DataFrame({"tau": tau.astype("int64"), "i": range(len(rows))}).sort_values("tau")
    fetched = stories[["fetched_at"]].sort_values("fetched_at").astype("int64")
    last = pd.merge_asof(left, fetched, left_on="tau", right_on="fetched_at", direction="backward")
    last = last.sort_values("i")
    stalled = (last["fetched_at"].isna() | (last["tau"] - last["fetched_at"] >= CFG.stall_ms)).tolist()
    return pd.DataFrame({"sent": sent, "count": count, "stalled": stalled}, index=rows.index)


def test_news_columns_match_a_pandas_reference_and_the_rebuild(
    broker: str, ch: Client, ch_url: str, ch_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    topics = unique_topics(broker, topic_prefix)
    candles = xrp_candles()[:1500]
    stories = _stories(candles[0].open_time)
    stored, on_kafka = stories[:20], stories[20:]
    NewsRows([], stored).write(ch)  # as the news sink stored them before the start
    p = Producer({"bootstrap.servers": broker})
    for a in [*stories[15:20], *on_kafka]:  # some of the stored ones again: the book keeps each once
        p.produce(topics["news_articles"], key=a["article_id"].encode(), value=orjson.dumps(a))
    p.flush(10)
    produce(broker, topics["raw"], candles)
    run_topology(broker, topics, ch_url, ch_db, tmp_path / "s", idle_timeout_s=4, resample=("5m", "1h"),
                 group=f"g-{uuid.uuid4().hex[:8]}", features=True, news_feature=CFG)  # fmt: skip

    res = ch.query(
        "SELECT interval, toUnixTimestamp64Milli(open_time) AS open_time, news_sentiment, news_count, "
        "news_stalled FROM feature_snapshots FINAL WHERE symbol = 'XRPUSDT' ORDER BY interval, open_time"
    )
    rows = pd.DataFrame(res.result_rows, columns=res.column_names)
    assert set(rows["interval"]) == {"1m", "5m", "1h"} and (rows["interval"] == "1m").sum() == 1500
    ref = _reference(pd.DataFrame(stories), rows, {"1m": 60_000, "5m": 300_000, "1h": 3_600_000})
    assert rows["news_count"].tolist() == ref["count"].tolist()
    assert rows["news_stalled"].tolist() == ref["stalled"].tolist()
    got, want = rows["news_sentiment"].to_numpy(float), ref["sent"].to_numpy(float)  # null: NaN
    assert (
        np.array_equal(np.isnan(got), np.isnan(want))
        and np.isnan(got).sum() == (rows["news_count"] == 0).sum()
    )
    assert np.allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-12, atol=1e-15)
    # the data exercises every case: stories averaged, none in the window, the hole stalled
    assert (rows["news_count"] > 1).sum() > 100 and (rows["news_count"] == 0).sum() > 100
    one = rows[rows["interval"] == "1m"]
    assert one["news_stalled"].sum() > 100 and (~one["news_stalled"]).sum() > 500

    # the batch path: the stored stories (the news sink stores every one) give the same rows
    NewsRows([], on_kafka).write(ch)
    book = NewsBook(CFG)
    assert book.seed(ch) == len(stories)
    for interval in ("1m", "5m", "1h"):
        done = rebuild_features(ch, "XRPUSDT", interval, news=book)
        assert done.derived > 0 and done.written == 0, (interval, done)

    # the news columns as model inputs: a model trained with them scores a feature row as it
    # arrives on ohlcv.features (its dict carries them), equal to CatBoost's batch answer
    from registry.loader import load_model
    from registry.store import Registry
    from training.train import TrainConfig, train_model

    cfg = TrainConfig(news_features=True, params={**TrainConfig().params, "iterations": 30})
    m = train_model(ch, "XRPUSDT", "1m", artifact_dir=tmp_path / "art", config=cfg)
    assert m.feature_names[-2:] == ["news_sentiment", "news_count"]
    loaded = load_model(Registry(ch), m.model_id)
    res = ch.query(
        f"SELECT {', '.join(m.feature_names)} FROM feature_snapshots FINAL "
        "WHERE symbol = 'XRPUSDT' AND interval = '1m' AND news_count > 0 ORDER BY open_time LIMIT 50"
    )
    feats = [dict(zip(res.column_names, r, strict=True)) for r in res.result_rows]
    x = np.array([loaded.vector(r) for r in feats])
    want = loaded.model.predict(x, prediction_type="Probability")[:, 1]
    assert np.allclose([loaded.probability(r) for r in feats], want, rtol=0, atol=1e-12)
