"""Reads of the news tables for source health, and the health gauges."""

from __future__ import annotations

import time
from typing import Any

from clickhouse_connect.driver.client import Client
from prometheus_client import Gauge

from news.health import HealthConfig, Poll, SourceHealth, source_health

DEDUP_RATIO = Gauge("news_dedup_ratio", "Unique / raw entries over every source's last poll with entries")
STALL = Gauge(
    "news_source_stall", "1 when the source has had no unique article for the stall threshold", ["source"]
)
ANOMALY = Gauge("news_source_anomaly", "1 while the source is in a dedup anomaly", ["source", "type"])
HEALTH = Gauge("news_source_health_score", "0..1 health score of the source", ["source"])


def source_healths(
    client: Client,
    cfg: HealthConfig,
    *,
    include_history: bool = False,
    polls_per_source: int = 50,
    now_ms: int | None = None,
) -> list[SourceHealth]:
    now = now_ms or int(time.time() * 1000)
    rows = client.query(
        # raw = the poll's entries the topology has judged (a poll not yet processed counts none)
        "SELECT p.source, toUnixTimestamp64Milli(p.at), p.status, countIf(e.entry_key != ''), "
        "countIf(e.entry_key != '' AND NOT e.duplicate), p.error, "
        "p.error_streak, p.retry_in_s, p.latency_ms, p.http_status FROM "
        "(SELECT * FROM news_polls ORDER BY at DESC LIMIT {n:UInt32} BY source) AS p "
        # only the entries of the polls read, not the whole table
        "LEFT JOIN (SELECT * FROM news_entries FINAL WHERE poll_id IN "
        "(SELECT poll_id FROM news_polls ORDER BY at DESC LIMIT {n:UInt32} BY source)) AS e "
        "ON e.source = p.source AND e.poll_id = p.poll_id "
        "GROUP BY p.source, p.at, p.status, p.entries, p.error, p.error_streak, p.retry_in_s, p.latency_ms, "
        "p.http_status, p.poll_id ORDER BY p.source, p.at DESC",
        parameters={"n": polls_per_source},
    ).result_rows
    last_unique: dict[str, int] = dict(
        client.query(  # type: ignore[arg-type]
            "SELECT source, toUnixTimestamp64Milli(max(fetched_at)) FROM news_entries FINAL "
            "WHERE NOT duplicate AND origin = 'poll' GROUP BY source"
        ).result_rows
    )
    by: dict[str, list[Poll]] = {}
    for src, at, status, raw, unique, err, streak, retry, lat, code in rows:
        by.setdefault(src, []).append(
            Poll(int(at), status, int(raw), min(int(unique), int(raw)), err, int(streak), retry, lat, code)
        )
    return [
        source_health(s, ps, last_unique.get(s), now, cfg, include_history) for s, ps in sorted(by.items())
    ]


def export_gauges(healths: list[SourceHealth], client: Client | None = None) -> None:
    last = [h.dedup_last_ratio for h in healths if h.dedup_last_ratio is not None]
    if last:
        DEDUP_RATIO.set(sum(last) / len(last))
    for h in healths:
        STALL.labels(h.source).set(1 if h.stalled else 0)
        HEALTH.labels(h.source).set(h.health_score)
        for kind in ("low_ratio", "volatility"):
            ANOMALY.labels(h.source, kind).set(1 if kind in h.anomalies else 0)


def config_from_settings(s: Any) -> HealthConfig:
    return HealthConfig(
        stall_s=s.news_source_stall_threshold_sec,
        min_ratio=s.news_dedup_min_ratio,
        ratio_streak=s.news_dedup_ratio_streak,
        volatility_window=s.news_dedup_volatility_window,
        volatility_threshold=s.news_dedup_volatility_threshold,
    )
