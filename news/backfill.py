"""News backfill and bootstrap, the original system's ``POST /api/news/backfill?days=N`` and
``POST /api/news/bootstrap`` (and ``NEWS_STARTUP_BOOTSTRAP_*``).

**Backfill** reads every feed's stories of the last N days as far as the feed reaches
(``RssPoller.backfill``: the feed whole, then its RFC 5005 older pages) and produces them onto
``news.raw`` with ``origin="backfill"``; the news topology dedups them like any entry, so a
backfill is safe to repeat. An RSS feed that keeps only its newest items and links no archive
cannot give more: the answer says so per feed (``stopped``). ``new`` counts the stories the
store did not hold when they were read (by link key or title key, the dedup keys); the
topology stores them within a few seconds.

**Bootstrap** fills an empty or thin store in rounds: each round polls every feed (a live
poll, recorded as one) and then backfills; it stops early when ``min_total`` stories are stored
or two rounds in a row found nothing new (a plateau). Each round's figures are kept
(``inserted_live``, ``inserted_backfill``, ``stored_total``); a ``BootstrapJob`` runs it in the
background and shows its progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client

from schemas.news import RawNewsEntry
from streams.news_poller import poll_once
from streams.rss import BackfillResult, RssPoller, publish
from topologies.news_logic import canonical_link, normalized_title, plain_text, sha1

logger = logging.getLogger(__name__)

DAY_MS = 86_400_000


def dedup_keys(e: RawNewsEntry) -> tuple[str, ...]:
    """The entry's link key and title key, as the news topology computes them."""
    link = sha1(canonical_link(e.link)) if e.link else ""
    title = plain_text(e.title)
    return tuple(k for k in (link, sha1(normalized_title(title)) if title else "") if k)


def stored_keys(client: Client, keys: Iterable[str]) -> set[str]:
    """Which of ``keys`` a stored story already has (as its link key or its title key)."""
    ks = sorted(set(keys))
    if not ks:
        return set()
    res = client.query(
        "SELECT link_key, title_key FROM news_articles FINAL "
        "WHERE link_key IN {k:Array(String)} OR title_key IN {k:Array(String)}",
        parameters={"k": ks},
    )
    return {k for row in res.result_rows for k in row if k}


def count_new(entries: Iterable[RawNewsEntry], known: set[str]) -> int:
    """Stories among ``entries`` none of whose keys is in ``known``; their keys join ``known``."""
    n = 0
    for e in entries:
        keys = dedup_keys(e)
        if keys and not known.intersection(keys):
            n += 1
        known.update(keys)
    return n


def stored_total(client: Client) -> int:
    return int(client.query("SELECT count() FROM news_articles FINAL").result_rows[0][0])


def backfill_once(
    poller: RssPoller,
    producer: Any,
    client: Client | None,
    days: float,
    *,
    max_pages: int = 20,
    known: set[str] | None = None,
    topic: str | None = None,
    dead_topic: str | None = None,
    now_ms: int | None = None,
) -> tuple[list[BackfillResult], list[int]]:
    """Backfill every feed over the last ``days`` days and produce what it read; returns the
    results and, per feed, how many stories were new to the store (and to ``known``, the keys
    already counted, which it extends)."""
    since = (now_ms or int(time.time() * 1000)) - int(days * DAY_MS)
    results = [poller.backfill(f, since, max_pages=max_pages) for f in poller.feeds]
    for r in results:
        publish(producer, r.as_poll(), topic=topic, dead_topic=dead_topic)
    left = producer.flush(10.0)
    if left:
        logger.error("%d backfilled news records not delivered within 10s", left)
    if known is None:
        known = set()
    if client is not None:
        known |= stored_keys(client, (k for r in results for e in r.entries for k in dedup_keys(e)))
    return results, [count_new(r.entries, known) for r in results]


def backfill_answer(results: list[BackfillResult], new: list[int], days: float) -> dict[str, Any]:
    return {
        "days": days,
        "entries": sum(len(r.entries) for r in results),
        "new": sum(new),
        "feeds": [
            {
                "source": r.feed.name,
                "status": r.status,
                "pages": r.pages,
                "entries": len(r.entries),
                "new": n,
                "refused": len(r.refused),
                "older_than_range": r.older_than_range,
                "stopped": r.stopped,
                "error": r.error,
                "retry_in_s": r.retry_in_s,
            }
            for r, n in zip(results, new, strict=True)
        ],
    }


@dataclass(frozen=True)
class BootstrapConfig:
    rounds: int = 4
    sleep_seconds: float = 3.0
    recent_days: float = 7.0
    min_total: int | None = None
    per_round_backfill_days: float | None = None  #: None: recent_days
    max_pages: int = 20


def bootstrap(
    poller: RssPoller,
    producer: Any,
    client: Client,
    cfg: BootstrapConfig,
    *,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    stop: threading.Event | None = None,
    topic: str | None = None,
    dead_topic: str | None = None,
) -> dict[str, Any]:
    """Rounds of poll + backfill until ``rounds``, ``min_total`` stored or a plateau (two
    rounds in a row with nothing new). Returns the rounds' stats and why it stopped."""
    known: set[str] = set()
    stats: list[dict[str, Any]] = []
    flat = 0
    why = f"ran its {cfg.rounds} rounds"
    for k in range(1, cfg.rounds + 1):
        polled = poll_once(poller, producer, client, topic=topic, dead_topic=dead_topic)
        entries = [e for r in polled for e in r.entries]
        known |= stored_keys(client, (key for e in entries for key in dedup_keys(e)))
        live = count_new(entries, known)
        results, new = backfill_once(
            poller, producer, client, cfg.per_round_backfill_days or cfg.recent_days,
            max_pages=cfg.max_pages, known=known, topic=topic, dead_topic=dead_topic,
        )  # fmt: skip
        if stop is not None and stop.wait(cfg.sleep_seconds):
            why = "stopped"
            break
        if stop is None:
            time.sleep(cfg.sleep_seconds)
        total = stored_total(client)
        row = {
            "round": k,
            "at": int(time.time() * 1000),
            "inserted_live": live,
            "inserted_backfill": sum(new),
            "backfill_pages": sum(r.pages for r in results),
            "feed_errors": sorted({r.feed.name for r in polled if r.status == "error"}
                                  | {r.feed.name for r in results if r.status == "error"}),
            "stored_total": total,
        }  # fmt: skip
        stats.append(row)
        logger.info("news bootstrap round %d: %s", k, row)
        if on_round is not None:
            on_round(row)
        flat = flat + 1 if live + sum(new) == 0 else 0
        if cfg.min_total is not None and total >= cfg.min_total:
            why = f"min_total {cfg.min_total} reached ({total} stored)"
            break
        if flat >= 2:
            why = "plateau: two rounds in a row found nothing new"
            break
    return {"rounds": stats, "stopped": why, "stored_total": stats[-1]["stored_total"] if stats else None}


@dataclass
class BootstrapJob:
    """One bootstrap at a time, in a background thread; its progress is readable meanwhile."""

    running: bool = False
    started_ts: int | None = None
    finished_ts: int | None = None
    config: dict[str, Any] | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None
    error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def start(
        self, work: Callable[[Callable[[dict[str, Any]], None]], dict[str, Any]], cfg: BootstrapConfig
    ) -> bool:
        """Run ``work(on_round)`` in the background; False when one is already running."""
        with self._lock:
            if self.running:
                return False
            self.running, self.started_ts, self.finished_ts = True, int(time.time() * 1000), None
            self.config, self.rounds, self.stopped, self.error = cfg.__dict__.copy(), [], None, None

        def run() -> None:
            try:
                out = work(self.rounds.append)
                self.stopped = out["stopped"]
            except Exception as exc:  # shown on the job; the API keeps serving
                logger.exception("news bootstrap failed")
                self.error = f"{type(exc).__name__}: {exc}"
            finally:
                self.finished_ts = int(time.time() * 1000)
                self.running = False

        threading.Thread(target=run, name="news-bootstrap", daemon=True).start()
        return True

    def as_dict(self) -> dict[str, Any]:
        return {
            "bootstrap_running": self.running,
            "bootstrap_started_ts": self.started_ts,
            "bootstrap_finished_ts": self.finished_ts,
            "config": self.config,
            "rounds": list(self.rounds),
            "stopped": self.stopped,
            "error": self.error,
        }
