"""The news topology: RSS entries in (``news.raw``), unique stories out (``news.articles``,
``news_articles``), every entry's verdict into ``news_entries`` (the dedup ratio).

``build_news`` is a pure builder: ``apply`` runs ``topologies.news_logic.process`` on each entry
(dedup, normalization, sentiment, asset tags) and returns ``{"entry", "article"}``; ``update``
produces a new article onto ``news.articles`` through the Application's producer; the sink writes
both tables. Metrics: ``news_articles_total{source}``, ``news_duplicates_total{source}``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from re import Pattern
from typing import Any

import orjson
from prometheus_client import Counter
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.models import Topic
from quixstreams.sinks import BaseSink

from topologies.news_logic import NewsDedup, Sentiment, process

ARTICLES = Counter("news_articles_total", "Unique news stories", ["source"])
DUPLICATES = Counter("news_duplicates_total", "News entries seen before (another poll or source)", ["source"])


def build_news(
    sdf: StreamingDataFrame, *, dedup: NewsDedup, sentiment: Sentiment, assets: Mapping[str, Pattern[str]],
    articles_topic: Topic, sink: BaseSink | None,
) -> StreamingDataFrame:  # fmt: skip
    def step(entry: dict[str, Any]) -> dict[str, Any]:
        seen, article = process(entry, dedup, sentiment, assets, int(time.time() * 1000))
        (DUPLICATES if article is None else ARTICLES).labels(entry["source"]).inc()
        return {"entry": seen, "article": article}

    producer = sdf.processing_context.producer

    def publish(v: dict[str, Any]) -> None:
        a = v["article"]
        if a is not None:
            producer.produce(topic=articles_topic.name, key=a["article_id"].encode(), value=orjson.dumps(a))

    out = sdf.apply(step).update(publish)
    if sink is not None:
        out.sink(sink)
    return out
