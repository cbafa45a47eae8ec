"""News routes (API key), names from the original system: ``/api/news/recent`` (a delta by
``since_ts``), ``/search``, ``/article/{id}``, ``/sources`` (health), ``/summary``,
``POST /api/news/fetch/manual``, ``POST /api/news/backfill``, ``POST /api/news/bootstrap`` (and
``GET`` its progress), ``/api/news/debug``. Reads ``news_articles``, ``news_entries`` and ``news_polls``."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ApiKeyDep, SettingsDep
from api.errors import StoreUnavailableError
from api.models import ErrorResponse
from api.reads import read_rows
from api.routes.models import BAD_BODY, ERRORS, PoolDep
from schemas.news import NewsArticle

router = APIRouter(tags=["news"], dependencies=[ApiKeyDep], responses=ERRORS)
#: the poll and backfill routes: no feed configured, or a bootstrap already running
NO_FEED: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "no feed configured (NEWS_RSS_FEEDS), or a bootstrap runs"}
}
_TIMES = ("published_at", "fetched_at", "ingested_at")
_COLS = tuple(NewsArticle.model_fields)
# times as ms under another name: an alias named like its column would shadow it in WHERE
_SELECT = ", ".join(f"toUnixTimestamp64Milli({c}) AS {c}_ms" if c in _TIMES else c for c in _COLS)
_SHORT = (
    "article_id",
    "source",
    "title",
    "link",
    "published_at",
    "sentiment",
    "sentiment_label",
    "symbols",
    "ingested_at",
)


def _rows(pool: Any, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return read_rows(pool, sql, params, what="news", times=_TIMES)


def _short(rows: list[dict[str, Any]], summary_only: bool) -> list[dict[str, Any]]:
    return [{k: r[k] for k in _SHORT} for r in rows] if summary_only else rows


@router.get("/api/news/recent")
def recent(
    pool: PoolDep,
    since_ts: Annotated[
        int | None, Query(ge=0, description="ms: only stories stored after it (a delta)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    summary_only: bool = False,
) -> dict[str, Any]:
    """Without ``since_ts``: the newest ``limit`` stories by publication time. With it: the stories
    stored after it, oldest first, and ``next_since_ts`` to ask for the next delta (unchanged
    when nothing is new)."""
    if since_ts is None:
        sql = (
            f"SELECT {_SELECT} FROM news_articles FINAL "  # noqa: S608
            "ORDER BY published_at DESC, article_id LIMIT {n:UInt32}"
        )
        rows = _rows(pool, sql, {"n": limit})
        nxt = max((r["ingested_at"] for r in rows), default=None)
    else:
        sql = (
            f"SELECT {_SELECT} FROM news_articles FINAL "  # noqa: S608
            "WHERE ingested_at > fromUnixTimestamp64Milli({t:Int64}) "
            "ORDER BY ingested_at, article_id LIMIT {n:UInt32}"
        )
        rows = _rows(pool, sql, {"t": since_ts, "n": limit})
        nxt = rows[-1]["ingested_at"] if rows else since_ts
    return {"articles": _short(rows, summary_only), "count": len(rows), "next_since_ts": nxt}


@router.get(
    "/api/news/search", responses={400: {"model": ErrorResponse, "description": "q under 2 characters"}}
)
def search(
    pool: PoolDep,
    q: Annotated[
        str, Query(max_length=200, description="at least 2 characters; title or summary contains it")
    ],
    days: Annotated[int, Query(ge=1, le=3650)] = 30,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    summary_only: bool = False,
) -> dict[str, Any]:
    """Stories whose title or summary contains ``q`` (case-insensitive), published in the last
    ``days`` days, newest first."""
    term = q.strip()
    if len(term) < 2:
        raise HTTPException(400, "q: give at least 2 characters to search for")
    like = "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    where = (
        "(title ILIKE {q:String} OR summary ILIKE {q:String}) "
        "AND published_at >= now64(3) - toIntervalDay({d:UInt32})"
    )
    params = {"q": like, "d": days, "n": limit, "o": offset}
    rows = _rows(
        pool,
        f"SELECT {_SELECT} FROM news_articles FINAL WHERE {where} "  # noqa: S608
        "ORDER BY published_at DESC, article_id LIMIT {n:UInt32} OFFSET {o:UInt32}",
        params,
    )
    total = _rows(pool, f"SELECT count() AS n FROM news_articles FINAL WHERE {where}", params)[0]["n"]  # noqa: S608
    return {
        "q": term,
        "days": days,
        "total": int(total),
        "offset": offset,
        "articles": _short(rows, summary_only),
    }


@router.get("/api/news/article/{article_id}")
def article(article_id: Annotated[str, Path(max_length=64)], pool: PoolDep) -> dict[str, Any]:
    rows = _rows(
        pool,
        f"SELECT {_SELECT} FROM news_articles FINAL WHERE article_id = {{a:String}}",  # noqa: S608
        {"a": article_id},
    )
    if not rows:
        raise HTTPException(404, f"unknown article {article_id!r}")
    return rows[0]


@router.get("/api/news/sources")
def sources(pool: PoolDep, settings: SettingsDep, include_history: bool = False) -> list[dict[str, Any]]:
    """Each source's health: last poll and error, error streak, backoff left, fetch latency, dedup
    ratio (last, average, volatility), low-ratio streak, last unique article, stalled, anomalies,
    a 0..1 score; ``include_history`` adds its last polls."""
    from news.store import config_from_settings, export_gauges, source_healths

    with pool.client() as client:
        try:
            hs = source_healths(client, config_from_settings(settings), include_history=include_history)
        except Exception as exc:
            raise StoreUnavailableError(f"news read failed: {exc}") from exc
    export_gauges(hs)
    return [h.as_dict() for h in hs]


@router.get("/api/news/summary")
def summary(pool: PoolDep, window_minutes: Annotated[int, Query(ge=1, le=525_600)] = 60) -> dict[str, Any]:
    """Stories stored in the last ``window_minutes``: how many, per source, and their sentiment."""
    p = {"m": window_minutes}
    cond = "ingested_at >= now64(3) - toIntervalMinute({m:UInt32})"
    sql = (
        "SELECT count() AS total, avg(sentiment) AS avg, stddevSamp(sentiment) AS std, "  # noqa: S608
        "countIf(sentiment_label = 'positive') AS positive, "
        "countIf(sentiment_label = 'negative') AS negative, "
        f"countIf(sentiment_label = 'neutral') AS neutral FROM news_articles FINAL WHERE {cond}"
    )
    (tot,) = _rows(pool, sql, p)
    by = _rows(
        pool,
        f"SELECT source, count() AS n FROM news_articles FINAL WHERE {cond} GROUP BY source "  # noqa: S608
        "ORDER BY n DESC, source",
        p,
    )
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in tot.items()}
    return {"window_minutes": window_minutes, **clean, "by_source": {r["source"]: int(r["n"]) for r in by}}


@router.get("/api/news/debug")
def debug(request: Request, pool: PoolDep, settings: SettingsDep, verbose: bool = False) -> dict[str, Any]:
    """The operator's first look (the original's checklist): configured sources, poll rounds,
    stories stored; ``verbose`` adds each feed's last error, its time, the error streak and the
    last fetch latency, and whether a bootstrap runs (``bootstrap_running``, its start and end)."""
    from streams.rss import parse_feeds

    (counts,) = _rows(
        pool,
        "SELECT (SELECT count() FROM news_polls) AS fetch_runs, "
        "(SELECT count() FROM news_articles FINAL) AS articles_ingested, "
        "(SELECT count() FROM news_entries FINAL) AS entries_seen",
        {},
    )
    out: dict[str, Any] = {
        "sources": [f.name for f in parse_feeds(settings.news_rss_feeds)],
        "poll_interval_s": settings.news_poll_interval,
        **{k: int(v) for k, v in counts.items()},
    }
    if verbose:
        rows = _rows(
            pool,
            "SELECT source, argMax(status, at) AS last_status, "
            "toUnixTimestamp64Milli(max(at)) AS last_poll_at, argMax(error_streak, at) AS error_streak, "
            "argMax(latency_ms, at) AS last_fetch_latency, "
            "argMaxIf(error, at, error != '') AS last_error, "
            "toUnixTimestamp64Milli(maxIf(at, error != '')) AS last_error_ts "
            "FROM news_polls GROUP BY source ORDER BY source",
            {},
        )
        out["verbose"] = {
            r.pop("source"): {
                **r,
                "last_error": r["last_error"] or None,
                "last_error_ts": r["last_error_ts"] or None,
            }
            for r in rows
        }
        job = _job(request).as_dict()
        out["verbose"].update({k: job[k] for k in ("bootstrap_running", "bootstrap_started_ts",
                                                    "bootstrap_finished_ts")})  # fmt: skip
    return out


@router.post("/api/news/fetch/manual", responses=NO_FEED)
def fetch_manual(request: Request, settings: SettingsDep) -> dict[str, Any]:
    """Poll every configured feed now (without waiting for NEWS_POLL_INTERVAL) and put the
    entries on news.raw; the news topology stores what is new. 409 when no feed is configured."""
    if not settings.news_rss_feeds:
        raise HTTPException(409, "no feed configured: set NEWS_RSS_FEEDS (name=url, comma-separated)")
    from streams.news_poller import poll_once, poller_from_settings

    poller = poller_from_settings(settings)
    queries = getattr(request.app.state, "queries", None)
    try:
        if queries is None:
            results = poll_once(poller, _producer(request), None)
        else:
            with queries.pool.client() as client:
                results = poll_once(poller, _producer(request), client)
    finally:
        poller.close()
    return {
        "polled": [
            {
                "source": r.feed.name,
                "status": r.status,
                "http_status": r.http_status,
                "entries": len(r.entries),
                "refused": len(r.refused),
                "error": r.error,
            }
            for r in results
        ]
    }


def _producer(request: Request) -> Any:
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": request.app.state.broker_address, "enable.idempotence": True})


def _need_feeds(settings: Any) -> None:
    if not settings.news_rss_feeds:
        raise HTTPException(409, "no feed configured: set NEWS_RSS_FEEDS (name=url, comma-separated)")


def _job(request: Request) -> Any:
    from news.backfill import BootstrapJob

    job = getattr(request.app.state, "news_bootstrap", None)
    if job is None:
        job = request.app.state.news_bootstrap = BootstrapJob()
    return job


@router.post("/api/news/backfill", responses=NO_FEED)
def backfill(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    days: Annotated[float, Query(gt=0, le=365, description="stories published in the last N days")] = 7,
) -> dict[str, Any]:
    """Read every feed's stories of the last ``days`` days as far as the feed reaches (the feed,
    then its RFC 5005 older pages, at most NEWS_BACKFILL_MAX_PAGES) and put them on news.raw;
    the topology dedups, so repeating it is safe. Per feed: pages read, entries in range, how
    many were new to the store, why it stopped (a feed without an archive ends at its first
    page). 409 when no feed is configured."""
    _need_feeds(settings)
    from news.backfill import backfill_answer, backfill_once
    from streams.news_poller import poller_from_settings

    poller = poller_from_settings(settings)
    try:
        with pool.client() as client:
            results, new = backfill_once(
                poller, _producer(request), client, days, max_pages=settings.news_backfill_max_pages
            )
    finally:
        poller.close()
    return backfill_answer(results, new, days)


class BootstrapBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(default=4, ge=1, le=100)
    sleep_seconds: float = Field(default=3.0, ge=0, le=600)
    recent_days: float = Field(default=7.0, gt=0, le=365)
    min_total: int | None = Field(default=None, ge=1, description="stop once this many stories are stored")
    per_round_backfill_days: float | None = Field(default=None, gt=0, le=365, description="None: recent_days")


@router.post("/api/news/bootstrap", status_code=202, responses={**NO_FEED, **BAD_BODY})
def start_bootstrap(
    request: Request, pool: PoolDep, settings: SettingsDep, body: BootstrapBody | None = None
) -> Any:
    """Fill the store in rounds (each: a live poll of every feed, then a backfill) in the
    background, stopping early at ``min_total`` stored or a plateau (two rounds with nothing
    new). 202 with the job; ``GET /api/news/bootstrap`` shows its rounds. 409 when one runs or
    no feed is configured."""
    _need_feeds(settings)
    from news.backfill import BootstrapConfig, bootstrap
    from streams.news_poller import poller_from_settings

    b = body or BootstrapBody()
    cfg = BootstrapConfig(
        b.rounds, b.sleep_seconds, b.recent_days, b.min_total, b.per_round_backfill_days,
        settings.news_backfill_max_pages,
    )  # fmt: skip
    producer = _producer(request)

    def work(on_round: Any) -> dict[str, Any]:
        poller = poller_from_settings(settings)
        try:
            with pool.client() as client:
                return bootstrap(poller, producer, client, cfg, on_round=on_round)
        finally:
            poller.close()

    job = _job(request)
    if not job.start(work, cfg):
        return JSONResponse(
            {"detail": "a news bootstrap is already running", "job": job.as_dict()}, status_code=409
        )
    return job.as_dict()


@router.get("/api/news/bootstrap")
def bootstrap_status(request: Request) -> dict[str, Any]:
    """The last (or running) bootstrap: running, start and end, its config, each round's
    ``inserted_live``, ``inserted_backfill`` and ``stored_total``, why it stopped, its error."""
    return dict(_job(request).as_dict())
