"""The RSS/Atom source: polls each feed of ``NEWS_RSS_FEEDS`` and produces every entry, as
fetched, onto ``news.raw`` (``schemas.news.RawNewsEntry``); a refused entry goes to
``ohlcv.deadletter`` with its reason.

Per feed (``FeedState``):

- **conditional GET**: the last response's ``ETag`` and ``Last-Modified`` go back as
  ``If-None-Match`` / ``If-Modified-Since``; a 304 is a poll with nothing new;
- **timeouts** (``NEWS_FETCH_TIMEOUT``) and a size cap (``NEWS_MAX_FEED_BYTES``, read as a
  stream: a huge feed is cut off, not loaded);
- **backoff** after a failure: ``Retry-After`` when a 429/503 gives one, else
  ``NEWS_BACKOFF_BASE`` x 2^(streak-1) seconds, at most ``NEWS_BACKOFF_MAX``; a poll inside the
  backoff is skipped (status ``backoff``, with the seconds left);
- **failures with a reason**: transport errors and timeouts, HTTP errors, a body that is not a
  feed (an HTML error page), malformed XML with no entries (feedparser's ``bozo`` reason).
  Malformed XML that still yields entries is used, the reason logged. Nothing raises out of
  ``poll``: other feeds keep flowing.

Entries: ``guid`` (feedparser's ``id``), ``link``, ``title``, ``summary``, ``author``,
``categories`` and the published/updated times in ms UTC (None when the feed has no parsable
date: kept, the topology decides). An entry with neither link nor guid cannot be deduplicated
and is refused; so is one with neither title nor link (nothing to show).
"""

from __future__ import annotations

import calendar
import email.utils
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urljoin, urlparse

import httpx
from prometheus_client import Counter, Histogram

from schemas.news import RawNewsEntry

logger = logging.getLogger(__name__)

FETCHES = Counter("news_fetch_total", "Feed polls", ["source", "outcome"])
ENTRIES = Counter("news_entries_total", "Entries produced or refused", ["source", "outcome"])
FETCH_SECONDS = Histogram("news_fetch_seconds", "Feed fetch time", ["source"])

_EMPTY_ALTERNATES = re.compile(rb"<(dc:description|content:encoded)\s*/>")
USER_AGENT = "ohlcv-platform-news/0.1 (+https://github.com/)"


@dataclass(frozen=True, slots=True)
class Feed:
    name: str
    url: str


def parse_feeds(items: Sequence[str]) -> list[Feed]:
    """``name=url`` or a bare ``url`` (named by its host); names must be unique."""
    feeds: list[Feed] = []
    for raw in items:
        name, sep, url = raw.partition("=")
        if not sep or "://" in name:
            name, url = "", raw
        url = url.strip()
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"NEWS_RSS_FEEDS: {raw!r} is not an http(s) URL (name=url or url)")
        feeds.append(Feed(name.strip() or parsed.netloc, url))
    names = [f.name for f in feeds]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"NEWS_RSS_FEEDS: source names must be unique, {dup} repeat (use name=url)")
    return feeds


@dataclass
class FeedState:
    etag: str | None = None
    modified: str | None = None
    backoff_until: float = 0.0  #: monotonic seconds
    error_streak: int = 0
    last_error: str | None = None
    last_error_at: int | None = None  #: ms since epoch
    last_status: str | None = None
    last_latency_ms: float | None = None
    last_success_at: int | None = None
    fetches: int = 0


@dataclass(frozen=True)
class Refused:
    reason: str
    entry: dict[str, Any]


@dataclass(frozen=True)
class PollResult:
    feed: Feed
    status: str  #: ok | not_modified | error | backoff
    http_status: int | None = None
    entries: list[RawNewsEntry] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    latency_ms: float | None = None
    error: str | None = None
    retry_in_s: float | None = None
    poll_id: str = ""


@dataclass(frozen=True)
class BackfillResult:
    feed: Feed
    status: str  #: ok | error | backoff
    pages: int = 0
    entries: list[RawNewsEntry] = field(default_factory=list)  #: published in the range (or undated)
    refused: list[Refused] = field(default_factory=list)
    error: str | None = None
    retry_in_s: float | None = None
    older_than_range: int = 0  #: entries read but published before the range
    latency_ms: float | None = None
    stopped: str | None = None  #: why it read no further

    def as_poll(self) -> PollResult:
        """As a poll result, for ``publish``."""
        return PollResult(self.feed, self.status, entries=self.entries, refused=self.refused)


class FeedError(Exception):
    def __init__(self, reason: str, http_status: int | None = None, retry_after_s: float | None = None):
        super().__init__(reason)
        self.http_status = http_status
        self.retry_after_s = retry_after_s


def _retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def _ms(struct: Any) -> int | None:
    if not struct:
        return None
    try:
        return int(calendar.timegm(struct)) * 1000
    except (TypeError, ValueError, OverflowError):
        return None


class RssPoller:
    def __init__(
        self,
        feeds: Sequence[Feed],
        *,
        timeout_s: float = 10.0,
        max_bytes: int = 5_000_000,
        backoff_base_s: float = 30.0,
        backoff_max_s: float = 1800.0,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self.feeds = list(feeds)
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.client = client or httpx.Client(
            timeout=timeout_s, follow_redirects=True, headers={"User-Agent": USER_AGENT}
        )
        self.clock = clock
        self.wall = wall
        self.state: dict[str, FeedState] = {f.name: FeedState() for f in self.feeds}

    def _fetch(
        self, feed: Feed, st: FeedState, url: str | None = None, *, conditional: bool = True
    ) -> tuple[int, bytes, httpx.Headers]:
        headers = {}
        if conditional and st.etag:
            headers["If-None-Match"] = st.etag
        if conditional and st.modified:
            headers["If-Modified-Since"] = st.modified
        try:
            with self.client.stream("GET", url or feed.url, headers=headers, timeout=self.timeout_s) as r:
                if r.status_code == 304:
                    return 304, b"", r.headers
                if r.status_code >= 400:
                    raise FeedError(
                        f"HTTP {r.status_code}",
                        r.status_code,
                        _retry_after(r.headers.get("Retry-After"), self.wall()),
                    )
                chunks, size = [], 0
                for chunk in r.iter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise FeedError(
                            f"feed larger than NEWS_MAX_FEED_BYTES={self.max_bytes} bytes: cut off",
                            r.status_code,
                        )
                    chunks.append(chunk)
                return r.status_code, b"".join(chunks), r.headers
        except httpx.TimeoutException as exc:
            raise FeedError(f"timed out after {self.timeout_s}s ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise FeedError(f"transport error: {type(exc).__name__}: {exc}") from exc

    def _entries(
        self,
        feed: Feed,
        body: bytes,
        headers: httpx.Headers,
        poll_id: str,
        fetched_at: int,
        origin: Literal["poll", "backfill"] = "poll",
    ) -> tuple[list[RawNewsEntry], list[Refused], str | None]:
        """(entries, refused entries, the URL of the next older page: RFC 5005 ``next`` or
        ``prev-archive`` link, None when the feed has none)."""
        import feedparser  # its import is slow-ish; only the news source needs it

        # an empty <dc:description/> or <content:encoded/> (CoinDesk's feed has both) would
        # replace the item's <description> as feedparser's summary: they carry nothing, drop them
        body = _EMPTY_ALTERNATES.sub(b"", body)
        parsed = feedparser.parse(body, response_headers={k.lower(): v for k, v in headers.items()})
        version = parsed.get("version") or ""
        good: list[dict[str, Any]] = []
        refused: list[Refused] = []
        for e in parsed.entries:
            raw = {
                "guid": e.get("id") or None,
                "link": e.get("link") or None,
                "title": e.get("title") or None,
                "summary": e.get("summary") or None,
                "author": e.get("author") or None,
                "categories": [t.get("term") for t in e.get("tags", []) if t.get("term")],
                "published_at": _ms(e.get("published_parsed")),
                "updated_at": _ms(e.get("updated_parsed")),
            }
            if raw["guid"] is None and raw["link"] is None:
                refused.append(Refused("entry has neither link nor guid: it cannot be deduplicated", raw))
            elif raw["title"] is None and raw["link"] is None:
                refused.append(Refused("entry has neither title nor link", raw))
            else:
                good.append(raw)
        bozo = parsed.get("bozo_exception") if parsed.get("bozo") else None
        if not good:
            if not version and not parsed.entries:
                kind = headers.get("content-type", "unknown content type")
                raise FeedError(f"not an RSS or Atom feed ({kind}{f'; {bozo}' if bozo else ''})")
            if bozo:
                raise FeedError(f"malformed feed: {bozo}")
        elif bozo:
            logger.warning("feed %s parsed with problems (%s); %d entries used", feed.name, bozo, len(good))
        entries = [
            RawNewsEntry(
                source=feed.name,
                feed_url=feed.url,
                poll_id=poll_id,
                poll_entries=len(good),
                fetched_at=fetched_at,
                feed_format=version or "unknown",
                origin=origin,
                **raw,
            )
            for raw in good
        ]
        older = None
        for link in parsed.get("feed", {}).get("links", []):
            if link.get("rel") in ("next", "prev-archive") and link.get("href"):
                older = str(link["href"])
                break
        return entries, refused, older

    def poll(self, feed: Feed) -> PollResult:
        st = self.state.setdefault(feed.name, FeedState())
        now = self.clock()
        if now < st.backoff_until:
            FETCHES.labels(feed.name, "backoff").inc()
            return PollResult(
                feed, "backoff", retry_in_s=round(st.backoff_until - now, 3), error=st.last_error
            )
        poll_id = uuid.uuid4().hex
        t0 = time.perf_counter()
        st.fetches += 1
        try:
            code, body, headers = self._fetch(feed, st)
            latency = (time.perf_counter() - t0) * 1000
            if code == 304:
                result = PollResult(feed, "not_modified", 304, latency_ms=latency, poll_id=poll_id)
            else:
                entries, refused, _ = self._entries(feed, body, headers, poll_id, int(self.wall() * 1000))
                result = PollResult(feed, "ok", code, entries, refused, latency, poll_id=poll_id)
                st.etag = headers.get("ETag") or None
                st.modified = headers.get("Last-Modified") or None
        except FeedError as exc:
            latency = (time.perf_counter() - t0) * 1000
            st.error_streak += 1
            wait = exc.retry_after_s
            if wait is None:
                wait = min(self.backoff_max_s, self.backoff_base_s * 2 ** (st.error_streak - 1))
            st.backoff_until = self.clock() + wait
            st.last_error, st.last_error_at = str(exc), int(self.wall() * 1000)
            st.last_status, st.last_latency_ms = "error", latency
            FETCHES.labels(feed.name, "error").inc()
            FETCH_SECONDS.labels(feed.name).observe(latency / 1000)
            logger.warning("feed %s (%s) failed: %s; next try in %.0fs", feed.name, feed.url, exc, wait)
            return PollResult(
                feed,
                "error",
                exc.http_status,
                latency_ms=latency,
                error=str(exc),
                retry_in_s=wait,
                poll_id=poll_id,
            )
        st.error_streak = 0
        st.backoff_until = 0.0
        st.last_status, st.last_latency_ms = result.status, latency
        st.last_success_at = int(self.wall() * 1000)
        FETCHES.labels(feed.name, result.status).inc()
        FETCH_SECONDS.labels(feed.name).observe(latency / 1000)
        ENTRIES.labels(feed.name, "produced").inc(len(result.entries))
        ENTRIES.labels(feed.name, "refused").inc(len(result.refused))
        for r in result.refused:
            logger.warning("feed %s: entry refused: %s", feed.name, r.reason)
        return result

    def backfill(self, feed: Feed, since_ms: int, *, max_pages: int = 20) -> BackfillResult:
        """The feed's stories published since ``since_ms``, as far as the feed reaches: the
        feed itself fetched whole (no conditional GET: a 304 would hide what is there), then
        its older pages by their RFC 5005 ``next`` / ``prev-archive`` links, until a page ends
        before ``since_ms``, there is no older page, or ``max_pages`` pages were read. Entries
        carry ``origin="backfill"``: source health does not count them as the feed's live
        flow. A feed in backoff is left alone; a failure keeps the pages read before it and,
        when the server gave a ``Retry-After``, backs the feed off. Nothing raises."""
        st = self.state.setdefault(feed.name, FeedState())
        if self.clock() < st.backoff_until:
            left = round(st.backoff_until - self.clock(), 3)
            return BackfillResult(feed, "backoff", error=st.last_error, retry_in_s=left)
        url: str | None = feed.url
        seen: set[str] = set()
        entries: list[RawNewsEntry] = []
        refused: list[Refused] = []
        pages = older_than_range = 0
        reason = "the feed has no older page (RFC 5005 next / prev-archive link)"
        t0 = time.perf_counter()
        while url is not None:
            if pages >= max_pages:
                reason = f"stopped at NEWS_BACKFILL_MAX_PAGES={max_pages} pages"
                break
            if url in seen:
                reason = f"page {url} links back to a page already read"
                break
            seen.add(url)
            try:
                _, body, headers = self._fetch(feed, st, url, conditional=False)
                page, bad, older = self._entries(
                    feed, body, headers, f"backfill-{uuid.uuid4().hex}", int(self.wall() * 1000), "backfill"
                )
            except FeedError as exc:
                if exc.retry_after_s is not None:
                    st.backoff_until = self.clock() + exc.retry_after_s
                FETCHES.labels(feed.name, "backfill_error").inc()
                logger.warning("backfill of %s failed on page %d (%s): %s", feed.name, pages + 1, url, exc)
                return BackfillResult(
                    feed, "error", pages, entries, refused, str(exc), exc.retry_after_s,
                    older_than_range, (time.perf_counter() - t0) * 1000,
                )  # fmt: skip
            pages += 1
            FETCHES.labels(feed.name, "backfill").inc()
            refused.extend(bad)
            dated = [e.published_at or e.updated_at for e in page]
            for e, when in zip(page, dated, strict=True):
                if when is not None and when < since_ms:
                    older_than_range += 1
                else:
                    entries.append(e)
            if any(w is not None and w < since_ms for w in dated):
                reason = "reached stories older than the range"
                break
            url = urljoin(url, older) if older else None
        ENTRIES.labels(feed.name, "backfilled").inc(len(entries))
        ms = (time.perf_counter() - t0) * 1000
        return BackfillResult(feed, "ok", pages, entries, refused, None, None, older_than_range, ms, reason)

    def poll_all(self) -> list[PollResult]:
        return [self.poll(f) for f in self.feeds]

    def close(self) -> None:
        self.client.close()


def publish(
    producer: Any, result: PollResult, *, topic: str | None = None, dead_topic: str | None = None
) -> int:
    """Produce a poll's entries (key: the source) and its refused entries as dead letters;
    returns how many entries were produced. The caller flushes."""
    import json

    from schemas.events import DeadLetter
    from schemas.topics import DEAD_LETTER, NEWS_RAW

    for e in result.entries:
        producer.produce(
            topic or NEWS_RAW.name, key=result.feed.name.encode(), value=e.model_dump_json().encode()
        )
    for r in result.refused:
        dl = DeadLetter(
            reason=r.reason,
            source=result.feed.url,
            stage="news.rss",
            payload=json.dumps(r.entry),
            at=int(time.time() * 1000),
            key=result.feed.name,
        )
        producer.produce(
            dead_topic or DEAD_LETTER.name, key=result.feed.name.encode(), value=dl.model_dump_json().encode()
        )
    return len(result.entries)
