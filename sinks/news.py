"""ClickHouse sink of the news topology: ``news_entries`` (every entry, new or duplicate) and
``news_articles`` (the new ones), one insert each per checkpoint; replays write the same rows
again, which the ReplacingMergeTrees fold."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from clickhouse_connect.driver.client import Client

from schemas.news import NewsArticle
from sinks.clickhouse import ClickHouseSink

ARTICLE_COLUMNS = tuple(NewsArticle.model_fields)
ENTRY_COLUMNS = (
    "source",
    "poll_id",
    "entry_key",
    "fetched_at",
    "article_id",
    "duplicate",
    "duplicate_of_source",
    "origin",
)


class NewsRows:
    def __init__(self, entries: list[dict[str, Any]], articles: list[dict[str, Any]]):
        self.entries = entries
        self.articles = articles
        self.count = len(entries)

    def write(self, client: Client) -> None:
        if self.articles:
            client.insert("news_articles", [[a[c] for c in ARTICLE_COLUMNS] for a in self.articles],
                          column_names=list(ARTICLE_COLUMNS))  # fmt: skip
        if self.entries:
            client.insert("news_entries", [[e[c] for c in ENTRY_COLUMNS] for e in self.entries],
                          column_names=list(ENTRY_COLUMNS))  # fmt: skip


class ClickHouseNewsSink(ClickHouseSink):
    def rows(self, values: Iterable[Any], now_ms: int) -> NewsRows:
        entries: list[dict[str, Any]] = []
        articles: list[dict[str, Any]] = []
        for v in values:
            entries.append(v["entry"])
            if v["article"] is not None:
                articles.append(v["article"])
        return NewsRows(entries, articles)
