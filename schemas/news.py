"""News contracts: one RSS/Atom entry as fetched (``news.raw``).

An entry is produced as the feed gave it (feedparser's fields, times as ms since epoch in UTC
where the feed had a parsable time), with the poll it came from, so the news topology can count
duplicates per source and poll (the dedup ratio) and nothing is lost before normalization.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RawNewsEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="the feed's name in NEWS_RSS_FEEDS")
    feed_url: str
    poll_id: str = Field(description="one id per poll of one feed")
    poll_entries: int = Field(ge=1, description="how many entries that poll produced")
    fetched_at: int = Field(description="ms since epoch when the poll's response arrived")
    feed_format: str = Field(description="feedparser's version, e.g. rss20, atom10")
    origin: Literal["poll", "backfill"] = Field(
        default="poll", description="a live poll, or a backfill reading the feed's older pages"
    )
    guid: str | None = None
    link: str | None = None
    title: str | None = None
    summary: str | None = Field(default=None, description="as in the feed (may hold HTML)")
    author: str | None = None
    categories: list[str] = Field(default_factory=list)
    published_at: int | None = Field(default=None, description="ms since epoch, UTC; None: no parsable date")
    updated_at: int | None = None


class NewsArticle(BaseModel):
    """One unique story (``news.articles``, ``news_articles``)."""

    article_id: str = Field(description="sha1 of the canonical link (of the title when there is no link)")
    source: str = Field(description="the feed the story was first seen in")
    link: str
    guid: str
    title: str
    summary: str = Field(description="plain text")
    author: str
    categories: list[str]
    symbols: list[str] = Field(description="served symbols the story mentions (by asset name or ticker)")
    published_at: int = Field(description="ms since epoch, UTC")
    published_estimated: bool = Field(description="the feed gave no date: published_at is the fetch time")
    fetched_at: int
    poll_id: str
    entry_key: str = Field(description="sha1 of the entry's guid, link and title as fetched")
    link_key: str
    title_key: str
    sentiment: float = Field(ge=-1, le=1, description="VADER compound score of title + summary")
    sentiment_label: str = Field(description="positive (>= 0.05), negative (<= -0.05) or neutral")
    ingested_at: int
    origin: str = Field(description="poll or backfill: how the story was first found")
