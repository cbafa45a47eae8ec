"""The model monitor: every ``CALIBRATION_MONITOR_INTERVAL`` seconds, for each stream with a
production model, in order:

1. realized outcomes of its newest scores (``monitoring.outcomes.realize``);
2. a recorded live calibration check (``monitoring.live.check``);
3. drift of the newest ``AUTO_RETRAIN_DRIFT_WINDOW`` complete rows against the model's
   training rows (``monitoring.drift``; the reference is read once per model);
4. every ``REPORT_INTERVAL`` seconds (and in the first round), the Evidently data drift and
   classification reports (``reports``), when there are rows for them;
5. the auto-retrain check (``retrain.auto.run_check``), which records its decision.

One stream's failure is logged and counted and never stops the others. ``run_once`` is the
round (tests and the demo call it directly); ``MonitorThread`` runs rounds until stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client
from prometheus_client import Counter, Gauge

from monitoring import drift as drift_mod
from monitoring import live as live_mod
from monitoring.outcomes import realize
from registry.store import Model, Registry
from retrain.auto import Decision, Lock, RetrainConfig, run_check

logger = logging.getLogger(__name__)

ROUNDS = Counter("model_monitor_rounds_total", "Model monitor rounds", ["outcome"])
LAST_ROUND = Gauge(
    "model_monitor_last_success_timestamp", "Unix time of the last monitor round without error"
)
DRIFT_SCORE = Gauge(
    "model_feature_drift_score", "Drift score against the training rows", ["symbol", "interval"]
)


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    horizon: int = 5
    dead_zone: float = 0.0
    live: live_mod.LiveConfig = field(default_factory=live_mod.LiveConfig)
    drift_features: tuple[str, ...] = ()
    drift_mode: drift_mod.DriftMode = "max_abs"
    drift_window: int = 200
    drift_threshold: float = 3.0
    report_interval_s: float = 3600.0
    report_dir: Path = Path(".data/reports")
    artifact_dir: Path = Path("models")
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    thread_count: int = -1

    @classmethod
    def from_settings(cls, s: Any) -> MonitorConfig:
        from registry.promotion import PromotionRules

        return cls(
            horizon=s.label_horizon_bars,
            dead_zone=s.label_dead_zone,
            live=live_mod.LiveConfig(
                window=s.calibration_window,
                min_rows=s.calibration_min_rows,
                ece_abs=s.calibration_ece_abs_threshold,
                ece_rel=s.calibration_ece_rel_threshold,
                streak_n=s.calibration_breach_streak,
                threshold=s.inference_prob_threshold,
            ),
            drift_features=tuple(s.auto_retrain_drift_features),
            drift_mode=s.auto_retrain_drift_mode,
            drift_window=s.auto_retrain_drift_window,
            drift_threshold=s.drift_z_threshold,
            report_interval_s=s.report_interval,
            report_dir=s.reports_dir,
            artifact_dir=s.artifact_dir,
            retrain=RetrainConfig(
                enabled=s.auto_retrain_enabled,
                cooldown_s=s.auto_retrain_cooldown,
                lock_ttl_s=s.auto_retrain_lock_ttl,
                rules=PromotionRules.from_settings(s),
            ),
        )


@dataclass
class StreamRound:
    symbol: str
    interval: str
    model_id: str
    realized: int = 0
    calibration: live_mod.LiveCalibration | None = None
    drift: drift_mod.DriftCheck | None = None
    reports: list[str] = field(default_factory=list)
    decision: Decision | None = None
    error: str | None = None


class ModelMonitor:
    def __init__(
        self,
        client: Client,
        streams: Sequence[tuple[str, str]],
        cfg: MonitorConfig,
        lock: Lock | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.client = client
        self.streams = list(streams)
        self.cfg = cfg
        self.lock = lock
        self.clock = clock
        self._reference: dict[str, list[dict[str, Any]]] = {}  # model id -> training rows sample
        self._reported: dict[tuple[str, str], float] = {}

    def reference(self, model: Model) -> list[dict[str, Any]]:
        if model.model_id not in self._reference:
            if len(self._reference) >= 32:  # models replaced long ago
                self._reference.clear()
            self._reference[model.model_id] = drift_mod.reference_rows(self.client, model)
        return self._reference[model.model_id]

    def reports(
        self,
        model: Model,
        reference: list[dict[str, Any]],
        current: list[dict[str, Any]],
        trigger: str = "schedule",
    ) -> list[str]:
        """Build and store both reports of the stream now (those with rows); their ids."""
        from reports.evidently_reports import classification, data_drift
        from reports.store import store

        out = []
        features = self.cfg.drift_features or tuple(model.feature_names)
        if len(reference) >= 2 and len(current) >= 2:
            rec = data_drift(
                reference,
                current,
                features,
                out_dir=self.cfg.report_dir,
                symbol=model.symbol,
                interval=model.interval,
                model_id=model.model_id,
                trigger=trigger,
            )
            store(self.client, rec)
            out.append(rec.report_id)
        rows = live_mod.realized(
            self.client, model.model_id, model.symbol, model.interval, self.cfg.live.window
        )
        clean = [(r[0], r[1], r[2]) for r in rows if r[3]][: self.cfg.live.window]
        if len({r[2] for r in clean}) == 2:
            rec = classification(
                clean,
                out_dir=self.cfg.report_dir,
                symbol=model.symbol,
                interval=model.interval,
                model_id=model.model_id,
                threshold=self.cfg.live.threshold,
                trigger=trigger,
            )
            store(self.client, rec)
            out.append(rec.report_id)
        return out

    def run_stream(self, symbol: str, interval: str, *, force_reports: bool = False) -> StreamRound | None:
        model = Registry(self.client).production(symbol, interval)
        if model is None:
            return None
        r = StreamRound(symbol, interval, model.model_id)
        r.realized = realize(
            self.client,
            symbol,
            interval,
            horizon=self.cfg.horizon,
            dead_zone=self.cfg.dead_zone,
            window=max(5000, 4 * self.cfg.live.window),
        ).labelled
        r.calibration = live_mod.check(self.client, model, self.cfg.live)
        reference = self.reference(model)
        current = drift_mod.current_rows(self.client, symbol, interval, self.cfg.drift_window)
        r.drift = drift_mod.check_drift(
            current,
            reference,
            features=self.cfg.drift_features or None,
            mode=self.cfg.drift_mode,
            threshold=self.cfg.drift_threshold,
        )
        if r.drift.score is not None:
            DRIFT_SCORE.labels(symbol, interval).set(r.drift.score)
        due = self._reported.get((symbol, interval))
        if force_reports or due is None or self.clock() - due >= self.cfg.report_interval_s:
            r.reports = self.reports(model, reference, current)
            self._reported[(symbol, interval)] = self.clock()
        r.decision = run_check(
            self.client,
            symbol,
            interval,
            drift_score=r.drift.score,
            drift_threshold=self.cfg.drift_threshold,
            calibration_recommends=r.calibration.recommend_retrain,
            cfg=self.cfg.retrain,
            lock=self.lock,
            artifact_dir=self.cfg.artifact_dir,
            thread_count=self.cfg.thread_count,
        )
        return r

    def run_once(self, *, force_reports: bool = False) -> list[StreamRound]:
        out = []
        failed = False
        for symbol, interval in self.streams:
            try:
                r = self.run_stream(symbol, interval, force_reports=force_reports)
            except Exception as exc:
                logger.exception("model monitor round of %s %s failed", symbol, interval)
                failed = True
                out.append(StreamRound(symbol, interval, "", error=f"{type(exc).__name__}: {exc}"))
                continue
            if r is not None:
                out.append(r)
        ROUNDS.labels("error" if failed else "ok").inc()
        if not failed:
            LAST_ROUND.set(time.time())
        return out


class MonitorThread(threading.Thread):
    def __init__(self, monitor: ModelMonitor, every_s: float, first_delay_s: float = 0.0):
        super().__init__(name="model-monitor", daemon=True)
        self.monitor = monitor
        self.every_s = every_s
        self.first_delay_s = first_delay_s
        self._stop_event = threading.Event()

    def run(self) -> None:
        if self._stop_event.wait(self.first_delay_s):
            return
        while True:
            t0 = time.monotonic()
            self.monitor.run_once()
            if self._stop_event.wait(max(0.0, self.every_s - (time.monotonic() - t0))):
                return

    def stop(self) -> None:
        self._stop_event.set()


def build_monitor(settings: Any, broker_address: str, client: Client | None = None) -> ModelMonitor:
    """The monitor of every served stream, with the Kafka retrain lock on ``broker_address``."""
    from ohlcv.infra.broker import EMBEDDED_CONSUMER_CONFIG
    from ohlcv.infra.clickhouse import make_client
    from retrain.lock import KafkaLock

    streams = [(s, iv) for s in settings.symbols for iv in settings.all_intervals]
    extra = dict(EMBEDDED_CONSUMER_CONFIG) if settings.embedded_broker else {}
    lock = KafkaLock(broker_address, consumer_extra=extra)
    return ModelMonitor(
        client or make_client(settings.clickhouse_dsn), streams, MonitorConfig.from_settings(settings), lock
    )


def main(settings: Any) -> None:
    """``ohlcv run monitor``: monitor rounds until SIGINT/SIGTERM."""
    import signal

    t = MonitorThread(
        build_monitor(settings, settings.kafka_broker_address), settings.calibration_monitor_interval
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    t.start()
    stop.wait()
    t.stop()
    t.join(timeout=30)
