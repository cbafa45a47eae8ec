"""The registry's ClickHouse tables (``schemas/migrations/0006_models.sql``): models, their
metrics history and lineage, training jobs and promotion events.

Production is an event log: the production model of a stream is the ``to_model_id`` of its
newest ``promotion_events`` row. Promote, auto-promote and rollback each insert one row (with
both models' metrics), so a switch is atomic for every reader, and the history is the log.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from ohlcv.errors import OhlcvError
from registry.artifacts import read_verified


class RegistryError(OhlcvError):
    """A registry request that cannot be met (unknown model, nothing to roll back to)."""


MODEL_COLUMNS = (
    "model_id",
    "symbol",
    "interval",
    "version",
    "created_at",
    "algorithm",
    "artifact_path",
    "artifact_sha256",
    "feature_names",
    "feature_set_version",
    "label_horizon_bars",
    "label_dead_zone",
    "params",
    "data_from",
    "data_to",
    "train_rows",
    "validation_rows",
    "excluded_incomplete",
    "label_balance",
    "metrics",
    "train_metrics",
    "importances",
    "parent_model_id",
    "trigger",
    "training_job_id",
    "train_seconds",
)
_JSON = ("params", "metrics", "train_metrics", "importances")
_TIMES = ("created_at", "data_from", "data_to")
JOB_COLUMNS = (
    "job_id",
    "symbol",
    "interval",
    "status",
    "trigger",
    "requested_from",
    "requested_to",
    "started_at",
    "finished_at",
    "model_id",
    "error",
    "updated_at",
)
EVENT_COLUMNS = (
    "event_id",
    "symbol",
    "interval",
    "at",
    "kind",
    "from_model_id",
    "to_model_id",
    "from_metrics",
    "to_metrics",
    "recommended",
    "reasons",
    "actor",
)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Model:
    """One registered model (``model_registry``), times in ms since epoch."""

    model_id: str
    symbol: str
    interval: str
    version: int
    created_at: int
    algorithm: str
    artifact_path: str
    artifact_sha256: str
    feature_names: list[str]
    feature_set_version: int
    label_horizon_bars: int
    label_dead_zone: float
    params: dict[str, Any]
    data_from: int
    data_to: int
    train_rows: int
    validation_rows: int
    excluded_incomplete: int
    label_balance: float
    metrics: dict[str, Any]
    train_metrics: dict[str, Any]
    importances: dict[str, float]
    parent_model_id: str
    trigger: str
    training_job_id: str
    train_seconds: float

    def row(self) -> list[Any]:
        return [json.dumps(getattr(self, c)) if c in _JSON else getattr(self, c) for c in MODEL_COLUMNS]

    def as_dict(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in MODEL_COLUMNS}


def ms_select(cols: Sequence[str], times: Sequence[str]) -> str:
    """The SELECT list of ``cols`` with the ``times`` among them as ms since epoch."""
    return ", ".join(f"toUnixTimestamp64Milli({c})" if c in times else c for c in cols)


def of_stream(symbol: str | None, interval: str | None) -> tuple[str, dict[str, Any]]:
    """A WHERE clause (or "") keeping one symbol and/or interval, and its parameters."""
    where, params = [], {}
    if symbol:
        where.append("symbol = {s:String}")
        params["s"] = symbol
    if interval:
        where.append("interval = {i:String}")
        params["i"] = interval
    return (" WHERE " + " AND ".join(where) if where else ""), params


def _model(row: Sequence[Any]) -> Model:
    d = dict(zip(MODEL_COLUMNS, row, strict=True))
    for c in _JSON:
        d[c] = json.loads(d[c])
    d["feature_names"] = list(d["feature_names"])
    return Model(**d)


class Registry:
    def __init__(self, client: Client):
        self.client = client

    # --- models ---------------------------------------------------------------------------
    def next_version(self, symbol: str, interval: str) -> int:
        rows = self.client.query(
            "SELECT max(version) FROM model_registry FINAL "
            "WHERE symbol = {s:String} AND interval = {i:String}",
            parameters={"s": symbol, "i": interval},
        ).result_rows
        return int(rows[0][0] or 0) + 1

    def register(self, m: Model) -> None:
        self.client.insert("model_registry", [m.row()], column_names=list(MODEL_COLUMNS))
        self.client.insert(
            "model_lineage",
            [
                [
                    m.model_id,
                    m.parent_model_id,
                    m.symbol,
                    m.interval,
                    m.trigger,
                    m.data_from,
                    m.data_to,
                    m.created_at,
                ]
            ],
            column_names=[
                "model_id",
                "parent_model_id",
                "symbol",
                "interval",
                "trigger",
                "data_from",
                "data_to",
                "created_at",
            ],
        )
        self.record_metrics(m.model_id, m.symbol, m.interval, "validation", m.metrics, m.created_at)

    def record_metrics(
        self, model_id: str, symbol: str, interval: str, scope: str, q: dict[str, Any], at: int | None = None
    ) -> None:
        self.client.insert(
            "model_metrics_history",
            [
                [
                    model_id,
                    symbol,
                    interval,
                    at or now_ms(),
                    scope,
                    q["rows"],
                    q["auc"],
                    q["accuracy"],
                    q["brier"],
                    q["log_loss"],
                    q["ece"],
                    q["mce"],
                    json.dumps(q["bins"]),
                ]
            ],
            column_names=[
                "model_id",
                "symbol",
                "interval",
                "at",
                "scope",
                "rows",
                "auc",
                "accuracy",
                "brier",
                "log_loss",
                "ece",
                "mce",
                "bins",
            ],
        )

    def models(self, symbol: str | None = None, interval: str | None = None) -> list[Model]:
        """Registered models, newest first, optionally of one stream."""
        cond, params = of_stream(symbol, interval)
        sql = f"SELECT {ms_select(MODEL_COLUMNS, _TIMES)} FROM model_registry FINAL{cond}"  # noqa: S608 - constants
        sql += " ORDER BY created_at DESC, model_id"
        return [_model(r) for r in self.client.query(sql, parameters=params).result_rows]

    def model(self, model_id: str) -> Model:
        rows = self.client.query(
            f"SELECT {ms_select(MODEL_COLUMNS, _TIMES)} FROM model_registry FINAL "  # noqa: S608 - constants
            "WHERE model_id = {m:String}",
            parameters={"m": model_id},
        ).result_rows
        if not rows:
            raise RegistryError(f"unknown model {model_id!r}")
        return _model(rows[0])

    def artifact_bytes(self, m: Model) -> bytes:
        """The model's artifact, checked against its checksum (``ArtifactError`` otherwise)."""
        return read_verified(Path(m.artifact_path), m.artifact_sha256, m.model_id)

    # --- production and promotions ----------------------------------------------------------
    def events(
        self, symbol: str | None = None, interval: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        cond, params = of_stream(symbol, interval)
        params["n"] = limit
        sql = f"SELECT {ms_select(EVENT_COLUMNS, ('at',))} FROM promotion_events{cond}"  # noqa: S608 - constants
        sql += " ORDER BY at DESC, event_id DESC LIMIT {n:UInt32}"
        out = []
        for r in self.client.query(sql, parameters=params).result_rows:
            d = dict(zip(EVENT_COLUMNS, r, strict=True))
            for c in ("from_metrics", "to_metrics", "reasons"):
                d[c] = json.loads(d[c])
            out.append(d)
        return out

    def production_id(self, symbol: str, interval: str) -> str | None:
        ev = self.events(symbol, interval, limit=1)
        return ev[0]["to_model_id"] if ev else None

    def production(self, symbol: str, interval: str) -> Model | None:
        mid = self.production_id(symbol, interval)
        return self.model(mid) if mid else None

    def productions(self) -> dict[tuple[str, str], str]:
        """(symbol, interval) -> production model id, for every stream that has one."""
        rows = self.client.query(
            "SELECT symbol, interval, argMax(to_model_id, (at, event_id)) FROM promotion_events "
            "GROUP BY symbol, interval"
        ).result_rows
        return {(str(s), str(i)): str(m) for s, i, m in rows}

    def promote(
        self,
        model_id: str,
        *,
        kind: str = "promote",
        recommended: bool = False,
        reasons: Sequence[str] = (),
        actor: str = "cli",
    ) -> dict[str, Any]:
        """Make ``model_id`` production for its stream; its artifact is verified first, so a
        corrupt or missing artifact never replaces the production model."""
        m = self.model(model_id)
        self.artifact_bytes(m)
        current = self.production(m.symbol, m.interval)
        if current is not None and current.model_id == model_id:
            raise RegistryError(f"model {model_id} is already production for {m.symbol} {m.interval}")
        ev = {
            "event_id": uuid.uuid4().hex,
            "symbol": m.symbol,
            "interval": m.interval,
            "at": now_ms(),
            "kind": kind,
            "from_model_id": current.model_id if current else "",
            "to_model_id": model_id,
            "from_metrics": current.metrics if current else {},
            "to_metrics": m.metrics,
            "recommended": recommended,
            "reasons": list(reasons),
            "actor": actor,
        }
        row = [
            json.dumps(ev[c]) if c in ("from_metrics", "to_metrics", "reasons") else ev[c]
            for c in EVENT_COLUMNS
        ]
        self.client.insert("promotion_events", [row], column_names=list(EVENT_COLUMNS))
        return ev

    def rollback(self, symbol: str, interval: str, actor: str = "cli") -> dict[str, Any]:
        """Make the model that was production before the current one production again."""
        ev = self.events(symbol, interval, limit=1)
        if not ev:
            raise RegistryError(f"{symbol} {interval} has no production model")
        before = ev[0]["from_model_id"]
        if not before:
            raise RegistryError(
                f"{symbol} {interval}: the production model {ev[0]['to_model_id']} has no predecessor"
            )
        return self.promote(
            before, kind="rollback", reasons=[f"rollback from {ev[0]['to_model_id']}"], actor=actor
        )

    # --- training jobs ----------------------------------------------------------------------
    def job(self, job: dict[str, Any]) -> None:
        """Record a state of a training job (the newest state wins under FINAL)."""
        job = {**job, "updated_at": now_ms()}
        self.client.insert(
            "training_jobs", [[job.get(c) for c in JOB_COLUMNS]], column_names=list(JOB_COLUMNS)
        )

    def jobs(self, limit: int = 50) -> list[dict[str, Any]]:
        times = ("requested_from", "requested_to", "started_at", "finished_at", "updated_at")
        rows = self.client.query(
            f"SELECT {ms_select(JOB_COLUMNS, times)} FROM training_jobs FINAL "  # noqa: S608 - constants
            "ORDER BY started_at DESC LIMIT {n:UInt32}",
            parameters={"n": limit},
        ).result_rows
        return [dict(zip(JOB_COLUMNS, r, strict=True)) for r in rows]
