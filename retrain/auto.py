"""The auto-retrain decision of one stream, and the retrain it may start.

``decide`` (pure) turns a drift check and the newest calibration check into a trigger:
``drift`` when the drift score exceeds ``DRIFT_Z_THRESHOLD``, ``calibration`` when the breach
streak recommends a retrain, else none. ``run_check`` records the outcome in ``retrain_events``
(decision ``no_trigger``, ``recommended`` when ``AUTO_RETRAIN_ENABLED`` is off, ``cooldown``
within ``AUTO_RETRAIN_COOLDOWN`` of the stream's last retrain, ``locked`` when another process
holds the stream's lock, ``kept`` / ``promoted`` after training, ``failed``) and, when enabled
and not blocked, takes the stream's Kafka lock (``retrain.lock``), trains a candidate on the
stream's rows (``training.train``, trigger drift or calibration, parent = production), and
promotes it only when ``registry.promotion.recommend`` says so.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from clickhouse_connect.driver.client import Client
from prometheus_client import Counter

from registry.promotion import PromotionRules, recommend
from registry.store import Registry, now_ms, of_stream
from retrain.lock import Lease

logger = logging.getLogger(__name__)

CHECKS = Counter("auto_retrain_checks_total", "Auto-retrain checks of a stream")
TRIGGERED = Counter("auto_retrain_triggered_total", "Retrains started by drift or calibration", ["trigger"])


class Lock(Protocol):
    def acquire(self, name: str, ttl_s: float) -> Lease: ...
    def release(self, lease: Lease) -> None: ...


@dataclass(frozen=True, slots=True)
class RetrainConfig:
    enabled: bool = False  #: AUTO_RETRAIN_ENABLED
    cooldown_s: float = 3600.0  #: AUTO_RETRAIN_COOLDOWN
    lock_ttl_s: float = 3600.0  #: AUTO_RETRAIN_LOCK_TTL
    rules: PromotionRules = field(default_factory=PromotionRules)


@dataclass(frozen=True, slots=True)
class Decision:
    symbol: str
    interval: str
    trigger: str  #: drift | calibration | none
    decision: str
    details: dict[str, Any]
    job_id: str = ""
    event_id: str = ""


def decide(
    drift_score: float | None, drift_threshold: float, calibration_recommends: bool
) -> tuple[str, str]:
    """(trigger, why) from the two signals; drift first when both say so."""
    if drift_score is not None and drift_score > drift_threshold:
        return "drift", f"drift score {drift_score:.2f} > {drift_threshold}"
    if calibration_recommends:
        return "calibration", "live ECE breached its thresholds for the streak"
    score = "n/a" if drift_score is None else f"{drift_score:.2f}"
    return "none", f"drift score {score} <= {drift_threshold} and no calibration streak"


def last_retrain_at(client: Client, symbol: str, interval: str) -> int | None:
    rows = client.query(
        "SELECT toUnixTimestamp64Milli(max(at)) FROM retrain_events WHERE symbol = {s:String} "
        "AND interval = {i:String} AND decision IN ('kept', 'promoted', 'failed')",
        parameters={"s": symbol, "i": interval},
    ).result_rows
    v = rows[0][0] if rows else None
    return int(v) if v else None


def record(client: Client, d: Decision) -> Decision:
    ev = Decision(d.symbol, d.interval, d.trigger, d.decision, d.details, d.job_id, uuid.uuid4().hex)
    client.insert(
        "retrain_events",
        [
            [
                ev.event_id,
                ev.symbol,
                ev.interval,
                now_ms(),
                ev.trigger,
                ev.decision,
                json.dumps(ev.details),
                ev.job_id,
            ]
        ],
        column_names=["event_id", "symbol", "interval", "at", "trigger", "decision", "details", "job_id"],
    )
    return ev


def events(
    client: Client, symbol: str | None = None, interval: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    cond, params = of_stream(symbol, interval)
    params["n"] = limit
    sql = (
        "SELECT event_id, symbol, interval, toUnixTimestamp64Milli(at), trigger, decision, details, job_id "  # noqa: S608
        f"FROM retrain_events{cond} ORDER BY at DESC LIMIT {{n:UInt32}}"
    )
    rows = client.query(
        sql,
        parameters=params,
    ).result_rows
    cols = ("event_id", "symbol", "interval", "at", "trigger", "decision", "details", "job_id")
    return [{**dict(zip(cols, r, strict=True)), "details": json.loads(r[6])} for r in rows]


def run_check(
    client: Client,
    symbol: str,
    interval: str,
    *,
    drift_score: float | None,
    drift_threshold: float,
    calibration_recommends: bool,
    cfg: RetrainConfig,
    lock: Lock | None,
    artifact_dir: Path,
    train_config: Any = None,
    thread_count: int = -1,
) -> Decision:
    """One auto-retrain check of a stream; returns the recorded decision."""
    CHECKS.inc()
    trigger, why = decide(drift_score, drift_threshold, calibration_recommends)
    details: dict[str, Any] = {
        "why": why,
        "drift_score": drift_score,
        "drift_threshold": drift_threshold,
        "calibration_recommends": calibration_recommends,
    }
    if trigger == "none":
        return record(client, Decision(symbol, interval, trigger, "no_trigger", details))
    if not cfg.enabled:
        return record(
            client,
            Decision(
                symbol,
                interval,
                trigger,
                "recommended",
                {
                    **details,
                    "note": "AUTO_RETRAIN_ENABLED is false: run `ohlcv train` or POST /api/training/run",
                },
            ),
        )
    last = last_retrain_at(client, symbol, interval)
    if last is not None and now_ms() - last < cfg.cooldown_s * 1000:
        return record(
            client, Decision(symbol, interval, trigger, "cooldown", {**details, "last_retrain_at": last})
        )
    if lock is None:
        raise ValueError("auto-retrain needs a lock")
    lease = lock.acquire(f"retrain:{symbol}:{interval}", cfg.lock_ttl_s)
    if not lease.acquired:
        return record(
            client, Decision(symbol, interval, trigger, "locked", {**details, "holder": lease.holder_owner})
        )
    try:
        from training.train import TrainConfig, train_model  # CatBoost: only when a retrain runs

        TRIGGERED.labels(trigger).inc()
        reg = Registry(client)
        production = reg.production(symbol, interval)
        try:
            m = train_model(
                client,
                symbol,
                interval,
                artifact_dir=artifact_dir,
                config=train_config or TrainConfig(),
                trigger=trigger,
                thread_count=thread_count,
            )
        except Exception as exc:
            logger.exception("auto-retrain of %s %s failed", symbol, interval)
            return record(
                client, Decision(symbol, interval, trigger, "failed", {**details, "error": str(exc)})
            )
        rec = recommend(m.metrics, production.metrics if production else None, cfg.rules)
        details = {
            **details,
            "candidate": m.model_id,
            "production": production.model_id if production else None,
            "reasons": rec.reasons,
        }
        if rec.recommended:
            reg.promote(
                m.model_id,
                kind="auto",
                recommended=True,
                reasons=rec.reasons,
                actor=f"auto-retrain:{trigger}",
            )
            return record(client, Decision(symbol, interval, trigger, "promoted", details, m.training_job_id))
        return record(client, Decision(symbol, interval, trigger, "kept", details, m.training_job_id))
    finally:
        lock.release(lease)
