"""The news step, pure: keys, dedup, normalization, sentiment, asset tags.

**Keys.** ``link_key`` = sha1 of the canonical link (scheme and host lower-cased, ``utm_*``,
``fbclid`` and ``gclid`` parameters, the fragment and a trailing slash dropped); ``title_key`` =
sha1 of the title lower-cased with punctuation removed and whitespace collapsed. The article id
is the link key (the title key when an entry has no link).

**Dedup.** An entry is a duplicate when its link key or its title key was first seen in another
poll or from another entry (the same story from a second feed is caught by either key). What
first claimed a key is remembered as (source, poll, entry key), so a replayed record of the
same poll (at-least-once) gets the same answer again and is written again, never lost as a
duplicate of itself. The memory is seeded from ``news_articles`` at start (``NewsDedup.seed``):
exact across restarts. ``news.raw`` has one partition, so one consumer sees every source.

**Normalization.** The summary becomes plain text (tags removed, entities decoded, whitespace
collapsed); an entry without a parsable date takes its fetch time (``published_estimated``).

**Sentiment.** VADER (the ``vaderSentiment`` package, its lexicon shipped inside it; nothing is
downloaded): the compound score of title + summary in [-1, 1]; ``positive`` at >= 0.05,
``negative`` at <= -0.05, else ``neutral``. A lexicon model built for social-media English: it
knows no finance (``short``, ``bear``, ``liquidation`` carry little or the wrong weight), reads
no negation beyond three words, and scores headlines, not their consequences.

**Assets.** A served symbol is tagged when its base asset's ticker (``XRP``) or a known name
(``ripple``, ``bitcoin``) appears as a word in the title or summary.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_TAGS = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_TRACKING = ("utm_", "fbclid", "gclid")
QUOTES = ("USDT", "USDC", "BUSD", "FDUSD", "BTC", "ETH")
ASSET_NAMES: dict[str, tuple[str, ...]] = {
    "BTC": ("bitcoin",),
    "ETH": ("ether", "ethereum"),
    "XRP": ("ripple",),
    "LINK": ("chainlink",),
    "AVAX": ("avalanche",),
    "NEAR": ("near protocol",),
    "SOL": ("solana",),
    "DOGE": ("dogecoin",),
    "ADA": ("cardano",),
    "BNB": ("binance coin",),
}


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - an id, not a secret


def canonical_link(link: str) -> str:
    parts = urlsplit(link.strip())
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not k.lower().startswith(_TRACKING)
    ]
    path = parts.path.rstrip("/") or "/"
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, urlencode(query), ""))


def normalized_title(title: str) -> str:
    return _SPACE.sub(" ", _PUNCT.sub(" ", html.unescape(title).lower())).strip()


def plain_text(text: str | None) -> str:
    if not text:
        return ""
    return _SPACE.sub(" ", html.unescape(_TAGS.sub(" ", text))).strip()


def base_asset(symbol: str) -> str:
    for q in QUOTES:
        if symbol.endswith(q) and len(symbol) > len(q):
            return symbol[: -len(q)]
    return symbol


def asset_patterns(symbols: Iterable[str]) -> dict[str, re.Pattern[str]]:
    out = {}
    for s in symbols:
        base = base_asset(s)
        words = [re.escape(base.lower()), *(re.escape(n) for n in ASSET_NAMES.get(base, ()))]
        out[s] = re.compile(r"\b(" + "|".join(words) + r")\b", re.IGNORECASE)
    return out


class Sentiment:
    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._vader = SentimentIntensityAnalyzer()

    def score(self, text: str) -> tuple[float, str]:
        c = float(self._vader.polarity_scores(text)["compound"])
        return c, "positive" if c >= 0.05 else "negative" if c <= -0.05 else "neutral"


@dataclass
class NewsDedup:
    """What first claimed each key: (source, poll_id, entry_key)."""

    claims: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    limit: int = 500_000

    def seed(self, rows: Iterable[Sequence[Any]]) -> None:
        """``rows``: (link_key, title_key, source, poll_id, entry_key) of stored articles."""
        for link_key, title_key, source, poll_id, entry_key in rows:
            claim = (source, poll_id, entry_key)
            if link_key:
                self.claims.setdefault(link_key, claim)
            self.claims.setdefault(title_key, claim)

    def check(self, keys: tuple[str, ...], claim: tuple[str, str, str]) -> tuple[bool, str]:
        """(duplicate, the source that first had it); claims the keys when new."""
        for k in keys:
            first = self.claims.get(k)
            if first is not None and first != claim:
                return True, first[0]
        if len(self.claims) >= self.limit:  # a bound on memory: the oldest half goes
            for k in list(self.claims)[: self.limit // 2]:
                del self.claims[k]
        for k in keys:
            self.claims.setdefault(k, claim)
        return False, ""


def entry_key(e: Mapping[str, Any]) -> str:
    return sha1(f"{e.get('guid') or ''}|{e.get('link') or ''}|{e.get('title') or ''}")


def process(
    e: Mapping[str, Any],
    dedup: NewsDedup,
    sentiment: Sentiment,
    assets: Mapping[str, re.Pattern[str]],
    now_ms: int,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the entry's ``news_entries`` row, the article when it is new, else None)."""
    link = canonical_link(e["link"]) if e.get("link") else ""
    title = plain_text(e.get("title"))
    link_key = sha1(link) if link else ""
    title_key = sha1(normalized_title(title)) if title else ""
    ekey = entry_key(e)
    keys = tuple(k for k in (link_key, title_key) if k)
    dup, first_source = dedup.check(keys, (e["source"], e["poll_id"], ekey))
    article_id = link_key or title_key
    seen = {
        "source": e["source"],
        "poll_id": e["poll_id"],
        "entry_key": ekey,
        "fetched_at": e["fetched_at"],
        "article_id": article_id,
        "duplicate": dup,
        "duplicate_of_source": first_source,
        "origin": e.get("origin", "poll"),
    }
    if dup:
        return seen, None
    summary = plain_text(e.get("summary"))
    text = f"{title}. {summary}" if summary else title
    score, label = sentiment.score(text)
    published = e.get("published_at") or e.get("updated_at")
    article = {
        "article_id": article_id,
        "source": e["source"],
        "link": e.get("link") or "",
        "guid": e.get("guid") or "",
        "title": title,
        "summary": summary,
        "author": e.get("author") or "",
        "categories": list(e.get("categories", [])),
        "symbols": sorted(s for s, rx in assets.items() if rx.search(text)),
        "published_at": int(published or e["fetched_at"]),
        "published_estimated": published is None,
        "fetched_at": e["fetched_at"],
        "poll_id": e["poll_id"],
        "entry_key": ekey,
        "link_key": link_key,
        "title_key": title_key,
        "sentiment": score,
        "sentiment_label": label,
        "ingested_at": now_ms,
        "origin": e.get("origin", "poll"),
    }
    return seen, article
