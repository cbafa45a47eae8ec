"""Live calibration of a production model: its newest realized scores against the calibration
it had on its validation rows at training.

One check (``check``) of a stream's production model:

- **rows**: the newest ``window`` realized scores of that model (``score_outcomes``) on clean
  windows (``window_complete`` and no repair in the window); the scores on incomplete or
  repaired windows over the same span are measured apart (``flagged``), never mixed in;
- the numbers of ``calibration.metrics.quality`` (ECE, MCE, Brier, AUC, reliability bins);
- ``ece_delta = live ECE - production ECE`` (the model's validation ECE) and
  ``ece_relative = ece_delta / production ECE``;
- a **breach** when both ``ece_delta > ece_abs`` and ``ece_relative > ece_rel``; the
  **streak** counts consecutive breaching checks of the same model (a check without enough
  rows neither breaks nor extends it); a retrain is recommended once ``streak >= streak_n``
  (the seed's rule). Fewer than ``min_rows`` clean rows: status ``insufficient``.

Each check is a ``calibration_checks`` row and, when measured, a ``model_metrics_history`` row
(scope ``live``); the gauges ``inference_live_ece``, ``inference_live_ece_delta`` and
``calibration_retrain_recommendation`` carry the newest check per stream.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from clickhouse_connect.driver.client import Client
from prometheus_client import Gauge

from calibration.metrics import Quality, quality
from registry.store import Model, Registry, ms_select, now_ms

LIVE_ECE = Gauge(
    "inference_live_ece", "ECE of the newest realized scores (clean windows)", ["symbol", "interval"]
)
LIVE_ECE_DELTA = Gauge(
    "inference_live_ece_delta", "Live ECE minus the production model's validation ECE", ["symbol", "interval"]
)
RETRAIN_RECOMMENDED = Gauge(
    "calibration_retrain_recommendation",
    "1 when the calibration breach streak recommends a retrain",
    ["symbol", "interval"],
)

Status = Literal["ok", "breach", "insufficient"]
CHECK_COLUMNS = (
    "check_id",
    "symbol",
    "interval",
    "model_id",
    "at",
    "status",
    "rows",
    "flagged_rows",
    "auc",
    "brier",
    "ece",
    "mce",
    "flagged_ece",
    "production_ece",
    "ece_delta",
    "ece_relative",
    "breach",
    "streak",
    "recommend_retrain",
    "window_from",
    "window_to",
    "bins",
)


@dataclass(frozen=True, slots=True)
class LiveConfig:
    window: int = 500  #: CALIBRATION_WINDOW
    min_rows: int = 100  #: CALIBRATION_MIN_ROWS
    ece_abs: float = 0.05  #: CALIBRATION_ECE_ABS_THRESHOLD
    ece_rel: float = 0.5  #: CALIBRATION_ECE_REL_THRESHOLD
    streak_n: int = 3  #: CALIBRATION_BREACH_STREAK
    threshold: float = 0.5  #: INFERENCE_PROB_THRESHOLD (accuracy)


@dataclass(frozen=True, slots=True)
class LiveCalibration:
    symbol: str
    interval: str
    model_id: str
    status: Status
    rows: int
    flagged_rows: int
    live: Quality | None
    flagged: Quality | None
    production: dict[str, Any]  #: the model's validation ece, mce, brier, auc, bins
    ece_delta: float | None
    ece_relative: float | None
    breach: bool
    streak: int
    recommend_retrain: bool
    window: tuple[int, int] | None
    at: int

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["live"] = self.live.as_dict() if self.live else None
        d["flagged"] = self.flagged.as_dict() if self.flagged else None
        return d


def realized(client: Client, model_id: str, symbol: str, interval: str, window: int) -> list[tuple[Any, ...]]:
    rows = client.query(
        "SELECT toUnixTimestamp64Milli(open_time), probability, label, "
        "window_complete AND NOT window_has_repair FROM score_outcomes FINAL "
        "WHERE symbol = {s:String} AND interval = {i:String} AND model_id = {m:String} "
        "ORDER BY open_time DESC LIMIT {n:UInt32}",
        parameters={"s": symbol, "i": interval, "m": model_id, "n": 2 * window},
    ).result_rows
    return [tuple(r) for r in rows]


def previous_streak(client: Client, symbol: str, interval: str, model_id: str) -> int:
    rows = client.query(
        "SELECT streak FROM calibration_checks WHERE symbol = {s:String} AND interval = {i:String} "
        "AND model_id = {m:String} AND status != 'insufficient' ORDER BY at DESC LIMIT 1",
        parameters={"s": symbol, "i": interval, "m": model_id},
    ).result_rows
    return int(rows[0][0]) if rows else 0


def measure(
    rows: list[tuple[Any, ...]], model: Model, cfg: LiveConfig, prev_streak: int, at: int | None = None
) -> LiveCalibration:
    """The check over realized rows ``(open_time, probability, label, clean)``, newest first."""
    clean = [r for r in rows if r[3]][: cfg.window]
    since = clean[-1][0] if clean else None
    flagged = [r for r in rows if not r[3] and (since is None or r[0] >= since)]
    prod = {k: model.metrics.get(k) for k in ("ece", "mce", "brier", "auc", "rows", "bins")}

    def q(rs: list[tuple[Any, ...]]) -> Quality | None:
        if not rs:
            return None
        return quality(np.array([r[1] for r in rs]), np.array([r[2] for r in rs]), threshold=cfg.threshold)

    live = q(clean) if len(clean) >= cfg.min_rows else None
    delta = rel = None
    breach = False
    streak = prev_streak
    status: Status = "insufficient"
    if live is not None:
        prod_ece = float(prod["ece"] or 0.0)
        delta = live.ece - prod_ece
        rel = delta / prod_ece if prod_ece else None
        breach = delta > cfg.ece_abs and (rel is None or rel > cfg.ece_rel)
        streak = prev_streak + 1 if breach else 0
        status = "breach" if breach else "ok"
    return LiveCalibration(
        symbol=model.symbol,
        interval=model.interval,
        model_id=model.model_id,
        status=status,
        rows=len(clean),
        flagged_rows=len(flagged),
        live=live,
        flagged=q(flagged),
        production=prod,
        ece_delta=delta,
        ece_relative=rel,
        breach=breach,
        streak=streak,
        recommend_retrain=streak >= cfg.streak_n,
        window=(int(clean[-1][0]), int(clean[0][0])) if clean else None,
        at=at or now_ms(),
    )


def evaluate(client: Client, model: Model, cfg: LiveConfig) -> LiveCalibration:
    """The check now, not recorded (the API's on-demand view)."""
    rows = realized(client, model.model_id, model.symbol, model.interval, cfg.window)
    return measure(rows, model, cfg, previous_streak(client, model.symbol, model.interval, model.model_id))


def record(client: Client, lc: LiveCalibration) -> None:
    live = lc.live
    row = {
        "check_id": uuid.uuid4().hex,
        "symbol": lc.symbol,
        "interval": lc.interval,
        "model_id": lc.model_id,
        "at": lc.at,
        "status": lc.status,
        "rows": lc.rows,
        "flagged_rows": lc.flagged_rows,
        "auc": live.auc if live else None,
        "brier": live.brier if live else None,
        "ece": live.ece if live else None,
        "mce": live.mce if live else None,
        "flagged_ece": lc.flagged.ece if lc.flagged else None,
        "production_ece": float(lc.production["ece"] or 0.0),
        "ece_delta": lc.ece_delta,
        "ece_relative": lc.ece_relative,
        "breach": lc.breach,
        "streak": lc.streak,
        "recommend_retrain": lc.recommend_retrain,
        "window_from": lc.window[0] if lc.window else None,
        "window_to": lc.window[1] if lc.window else None,
        "bins": json.dumps(live.as_dict()["bins"] if live else []),
    }
    client.insert("calibration_checks", [[row[c] for c in CHECK_COLUMNS]], column_names=list(CHECK_COLUMNS))
    if live is not None:
        Registry(client).record_metrics(lc.model_id, lc.symbol, lc.interval, "live", live.as_dict(), lc.at)
        LIVE_ECE.labels(lc.symbol, lc.interval).set(live.ece)
        LIVE_ECE_DELTA.labels(lc.symbol, lc.interval).set(lc.ece_delta or 0.0)
    RETRAIN_RECOMMENDED.labels(lc.symbol, lc.interval).set(1 if lc.recommend_retrain else 0)


def check(client: Client, model: Model, cfg: LiveConfig) -> LiveCalibration:
    """One recorded check of ``model`` (the production model of its stream)."""
    lc = evaluate(client, model, cfg)
    record(client, lc)
    return lc


def checks(client: Client, symbol: str, interval: str, limit: int = 50) -> list[dict[str, Any]]:
    cols = ms_select(CHECK_COLUMNS, ("at", "window_from", "window_to"))
    rows = client.query(
        f"SELECT {cols} FROM calibration_checks WHERE symbol = {{s:String}} AND interval = {{i:String}} "  # noqa: S608
        "ORDER BY at DESC LIMIT {n:UInt32}",
        parameters={"s": symbol, "i": interval, "n": limit},
    ).result_rows
    out = []
    for r in rows:
        d = dict(zip(CHECK_COLUMNS, r, strict=True))
        d["bins"] = json.loads(d["bins"])
        out.append(d)
    return out
