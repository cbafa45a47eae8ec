"""The one Settings class, read from the environment and ``.env``.

Names follow the original system where they fit (API_KEY, INGESTION_ENABLED, SYMBOL, INTERVAL);
SYMBOLS and INTERVALS serve many streams (comma-separated), SYMBOL/INTERVAL still work as single
values. Built only by entrypoints (``load_settings``); components take explicit arguments.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ohlcv.errors import ConfigError
from schemas.intervals import BINANCE_INTERVALS, interval_ms

CSV = Annotated[list[str], NoDecode]
_SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")
#: a scheduled scan window: whole days ending now, or ``"all"`` (the whole stored span)
ScanWindowDays = int | Literal["all"]
DEFAULT_WINDOWS: tuple[ScanWindowDays, ...] = (1, 30, 365)


def _split(v: Any) -> Any:
    if isinstance(v, str):
        return [p.strip() for p in v.split(",") if p.strip()]
    return v


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True)

    # --- what we serve -------------------------------------------------------------------
    symbols: CSV = Field(default_factory=lambda: ["XRPUSDT"], description="SYMBOLS")
    symbol: str | None = Field(default=None, description="SYMBOL (single, original name)")
    intervals: CSV = Field(default_factory=lambda: ["1m"], description="INTERVALS ingested")
    interval: str | None = Field(default=None, description="INTERVAL (single, original name)")
    resample_intervals: CSV = Field(
        default_factory=lambda: ["5m", "15m", "1h", "4h", "1d"],
        description="RESAMPLE_INTERVALS built from closed 1m candles",
    )

    # --- infrastructure ------------------------------------------------------------------
    data_dir: Path = Path(".data")
    kafka_broker_address: str = Field(default="", description="empty: start the embedded broker")
    kafka_consumer_group: str = "ohlcv-candles"
    features_consumer_group: str = Field(
        default="ohlcv-features", description="consumer group of `ohlcv run features` (production)"
    )
    features_enabled: bool = Field(
        default=True, description="FEATURES_ENABLED: `ohlcv up` runs the features topology too"
    )
    drift_z_threshold: float = Field(
        default=3.0, gt=0, description="DRIFT_Z_THRESHOLD of /api/features/drift"
    )
    processing_guarantee: Literal["at-least-once", "exactly-once"] = "at-least-once"

    # --- models (training, registry, promotion) -----------------------------------------------
    label_horizon_bars: int = Field(default=5, ge=1, le=10_000, description="LABEL_HORIZON_BARS")
    label_dead_zone: float = Field(
        default=0.0, ge=0, description="LABEL_DEAD_ZONE: |forward log return| at or below it has no label"
    )
    model_artifact_dir: Path | None = Field(
        default=None, description="MODEL_ARTIFACT_DIR (default DATA_DIR/models)"
    )
    auto_promote_min_auc_improve: float = Field(
        default=0.01, ge=0, description="AUTO_PROMOTE_MIN_AUC_IMPROVE: relative AUC gain over production"
    )
    auto_promote_max_brier_degrade: float = Field(
        default=0.0, ge=0, description="AUTO_PROMOTE_MAX_BRIER_DEGRADE: relative Brier loss allowed"
    )
    auto_promote_max_ece_degrade: float = Field(
        default=0.01, ge=0, description="AUTO_PROMOTE_MAX_ECE_DEGRADE: absolute ECE loss allowed"
    )
    scoring_enabled: bool = Field(
        default=True, description="SCORING_ENABLED: `ohlcv up` runs the scoring topology"
    )
    scoring_consumer_group: str = Field(default="ohlcv-scoring", description="group of `ohlcv run scoring`")
    model_poll_interval: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="MODEL_POLL_INTERVAL: seconds between a scorer's registry reads",
    )
    inference_prob_threshold: float = Field(
        default=0.5, gt=0, lt=1, description="INFERENCE_PROB_THRESHOLD: probability of a long decision"
    )

    # --- monitoring (live calibration, drift, reports, auto-retrain) ---------------------------
    monitor_enabled: bool = Field(
        default=True, description="MONITOR_ENABLED: `ohlcv up` runs the model monitor"
    )
    calibration_monitor_interval: float = Field(
        default=60.0, gt=0, description="CALIBRATION_MONITOR_INTERVAL: seconds between monitor rounds"
    )
    calibration_window: int = Field(
        default=500, ge=10, description="CALIBRATION_WINDOW: realized scores per check"
    )
    calibration_min_rows: int = Field(
        default=100, ge=2, description="CALIBRATION_MIN_ROWS: fewer is 'insufficient'"
    )
    calibration_ece_abs_threshold: float = Field(
        default=0.05, ge=0, description="CALIBRATION_ECE_ABS_THRESHOLD: live - production ECE that breaches"
    )
    calibration_ece_rel_threshold: float = Field(
        default=0.5, ge=0, description="CALIBRATION_ECE_REL_THRESHOLD: (live - production) / production ECE"
    )
    calibration_breach_streak: int = Field(
        default=3,
        ge=1,
        description="CALIBRATION_BREACH_STREAK: consecutive breaches that recommend a retrain",
    )
    report_interval: float = Field(
        default=3600.0, gt=0, description="REPORT_INTERVAL: seconds between reports"
    )
    report_dir: Path | None = Field(default=None, description="REPORT_DIR (default DATA_DIR/reports)")
    auto_retrain_enabled: bool = Field(default=False, description="AUTO_RETRAIN_ENABLED")
    auto_retrain_drift_features: CSV = Field(
        default_factory=list, description="AUTO_RETRAIN_DRIFT_FEATURES (comma list; empty: every feature)"
    )
    auto_retrain_drift_mode: Literal["max_abs", "mean_top3"] = Field(
        default="max_abs", description="AUTO_RETRAIN_DRIFT_MODE"
    )
    auto_retrain_drift_window: int = Field(
        default=200,
        ge=10,
        description="AUTO_RETRAIN_DRIFT_WINDOW: newest complete rows against the training rows",
    )
    auto_retrain_cooldown: float = Field(
        default=3600.0, ge=0, description="AUTO_RETRAIN_COOLDOWN: seconds after a retrain before the next"
    )
    auto_retrain_lock_ttl: float = Field(
        default=3600.0, gt=0, lt=86_400, description="AUTO_RETRAIN_LOCK_TTL: seconds a retrain lock lives"
    )

    # --- news (RSS/Atom) ----------------------------------------------------------------------
    news_rss_feeds: CSV = Field(
        default_factory=list, description="NEWS_RSS_FEEDS: name=url or url, comma list"
    )
    news_poll_interval: float = Field(
        default=90.0, gt=0, description="NEWS_POLL_INTERVAL: seconds between polls"
    )
    news_fetch_timeout: float = Field(default=10.0, gt=0, le=300, description="NEWS_FETCH_TIMEOUT: seconds")
    news_max_feed_bytes: int = Field(
        default=5_000_000, ge=1000, description="NEWS_MAX_FEED_BYTES: larger is cut off"
    )
    news_backoff_base: float = Field(
        default=30.0, gt=0, description="NEWS_BACKOFF_BASE: first backoff, seconds"
    )
    news_backoff_max: float = Field(
        default=1800.0, gt=0, description="NEWS_BACKOFF_MAX: longest backoff, seconds"
    )
    news_source_stall_threshold_sec: float = Field(
        default=900.0, gt=0, description="NEWS_SOURCE_STALL_THRESHOLD_SEC"
    )
    news_dedup_min_ratio: float = Field(default=0.15, ge=0, le=1, description="NEWS_DEDUP_MIN_RATIO")
    news_dedup_ratio_streak: int = Field(default=3, ge=1, description="NEWS_DEDUP_RATIO_STREAK")
    news_dedup_volatility_window: int = Field(default=10, ge=2, description="NEWS_DEDUP_VOLATILITY_WINDOW")
    news_dedup_volatility_threshold: float = Field(
        default=0.25, gt=0, description="NEWS_DEDUP_VOLATILITY_THRESHOLD"
    )
    news_backfill_max_pages: int = Field(
        default=20, ge=1, le=1000, description="NEWS_BACKFILL_MAX_PAGES: pages a backfill reads per feed"
    )
    news_startup_bootstrap_days: float = Field(
        default=0.0, ge=0, le=365, description="NEWS_STARTUP_BOOTSTRAP_DAYS: 0 = no bootstrap at start"
    )
    news_startup_bootstrap_rounds: int = Field(
        default=4, ge=1, le=100, description="NEWS_STARTUP_BOOTSTRAP_ROUNDS"
    )
    news_startup_bootstrap_interval: float = Field(
        default=5.0, ge=0, le=600, description="NEWS_STARTUP_BOOTSTRAP_INTERVAL: seconds between rounds"
    )
    news_startup_bootstrap_min_articles: int | None = Field(
        default=None, ge=1, description="NEWS_STARTUP_BOOTSTRAP_MIN_ARTICLES: stop once this many are stored"
    )
    news_feature_window: float = Field(
        default=3600.0, gt=0, le=30 * 86_400,
        description="NEWS_FEATURE_WINDOW: seconds of news a feature row's news_sentiment averages",
    )  # fmt: skip
    news_feature_delay: float = Field(
        default=30.0, ge=0, le=3600,
        description="NEWS_FEATURE_DELAY: a row counts news fetched this long before its bar closed",
    )  # fmt: skip
    # --- risk (simulated books) ---------------------------------------------------------------
    risk_enabled: bool = Field(default=True, description="RISK_ENABLED: run the risk topology in `ohlcv up`")
    risk_initial_equity: float = Field(default=10_000.0, gt=0, description="RISK_INITIAL_EQUITY per stream")
    risk_max_position_notional: float = Field(
        default=10_000.0, gt=0, description="RISK_MAX_POSITION_NOTIONAL"
    )
    risk_max_total_exposure: float = Field(
        default=50_000.0, gt=0, description="RISK_MAX_TOTAL_EXPOSURE: across all books of the account"
    )
    risk_max_daily_loss: float = Field(default=500.0, gt=0, description="RISK_MAX_DAILY_LOSS")
    risk_max_drawdown: float = Field(default=0.2, gt=0, lt=1, description="RISK_MAX_DRAWDOWN (fraction)")
    risk_stop_loss_pct: float = Field(default=0.02, gt=0, lt=1, description="RISK_STOP_LOSS_PCT (fraction)")
    risk_cooldown_bars: int = Field(default=15, ge=0, description="RISK_COOLDOWN_BARS")
    risk_fee_bps: float = Field(default=10.0, ge=0, le=1000, description="RISK_FEE_BPS")
    risk_slippage_bps: float = Field(default=5.0, ge=0, le=1000, description="RISK_SLIPPAGE_BPS")
    risk_metrics_interval: float = Field(default=5.0, gt=0, description="RISK_METRICS_INTERVAL: seconds")
    risk_limits_poll_interval: float = Field(
        default=5.0, gt=0, description="RISK_LIMITS_POLL_INTERVAL: seconds between reads of risk_limits"
    )
    clickhouse_url: str = Field(default="", description="empty: chdb under DATA_DIR")

    # --- Binance -------------------------------------------------------------------------
    ingestion_enabled: bool = False
    binance_market: Literal["spot", "usdm"] = "spot"
    binance_spot_ws_url: str = "wss://stream.binance.com:9443"
    binance_usdm_ws_url: str = "wss://fstream.binance.com"
    binance_spot_rest_url: str = "https://api.binance.com"
    binance_usdm_rest_url: str = "https://fapi.binance.com"

    # --- continuity and repair -----------------------------------------------------------
    backfill_enabled: bool = Field(default=True, description="BACKFILL_ENABLED: repair gaps from REST")
    backfill_concurrency: int = Field(default=4, ge=1, le=64)
    backfill_poll_interval_s: float = Field(
        default=30.0, gt=0,
        description="BACKFILL_POLL_INTERVAL_S: the orchestrator's ClickHouse queue poll, its slow path "
        "(gap_detected events and scan notices start repairs at once)",
    )  # fmt: skip
    continuity_scan_interval_s: float = Field(default=300.0, gt=0)
    continuity_windows_days: Annotated[list[ScanWindowDays], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_WINDOWS),
        description="CONTINUITY_WINDOWS_DAYS: the windows (whole days ending now, or `all`: from "
        "the first to the last stored bar) each scheduled scan covers; the longest one's holes "
        "(`all` is the longest) are queued when CONTINUITY_QUEUE_MISSING is on",
    )
    continuity_queue_missing: bool = Field(default=False, description="scans open segments for holes")

    # --- API -----------------------------------------------------------------------------
    api_key: SecretStr = SecretStr("dev-key")
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    api_recent_book: bool = Field(
        default=True,
        description="API_RECENT_BOOK: serve /recent from the live event stream (api.recent_book)",
    )
    api_ws_deflate: bool = Field(
        default=False,
        description=(
            "API_WS_DEFLATE: offer permessage-deflate on /ws/ohlcv. Off: an event is a few hundred "
            "bytes, and compressing it once per client is the fan-out's largest cost (bench.api_bench)"
        ),
    )
    health_max_ingestion_lag_sec: float = Field(default=120.0, gt=0)

    @field_validator(
        "symbols",
        "intervals",
        "resample_intervals",
        "auto_retrain_drift_features",
        "news_rss_feeds",
        mode="before",
    )
    @classmethod
    def _csv(cls, v: Any) -> Any:
        return _split(v)

    @field_validator("auto_retrain_drift_features")
    @classmethod
    def _drift_features(cls, v: list[str]) -> list[str]:
        from indicators.definitions import FEATURE_NAMES
        from schemas.features import NEWS_FEATURE_NAMES

        known = (*FEATURE_NAMES, *NEWS_FEATURE_NAMES)
        unknown = [f for f in v if f not in known]
        if unknown:
            raise ValueError(f"unknown features {unknown}; known: {', '.join(known)}")
        return v

    @field_validator("news_rss_feeds")
    @classmethod
    def _feeds(cls, v: list[str]) -> list[str]:
        from streams.rss import parse_feeds

        parse_feeds(v)  # ValueError names the bad entry
        return v

    @field_validator("continuity_windows_days", mode="before")
    @classmethod
    def _days(cls, v: Any) -> Any:
        days = _split(v)
        if isinstance(days, list):
            windows: list[ScanWindowDays] = []
            for d in days:
                if isinstance(d, str) and d.strip().lower() == "all":
                    windows.append("all")
                elif (isinstance(d, int) or (isinstance(d, str) and d.isdigit())) and int(d) >= 1:
                    windows.append(int(d))
                else:
                    raise ValueError(f"{d!r} is neither a whole number of days >= 1 nor 'all'")
            if not windows:
                raise ValueError("at least one window is required, e.g. 1,30,365 or 1,30,all")
            return windows
        return days

    @model_validator(mode="after")
    def _single_values_and_checks(self) -> Settings:
        # SYMBOL / INTERVAL (the original single-stream names) win only when the list form
        # was not given; frozen model, so set through object.__setattr__.
        symbols_var, intervals_var = "SYMBOLS", "INTERVALS"
        if self.symbol and "symbols" not in self.model_fields_set:
            object.__setattr__(self, "symbols", [self.symbol])
            symbols_var = "SYMBOL"
        if self.interval and "intervals" not in self.model_fields_set:
            object.__setattr__(self, "intervals", [self.interval])
            intervals_var = "INTERVAL"
        if "resample_intervals" not in self.model_fields_set:
            # the default resample set adapts to what is ingested (INTERVAL=5m alone is valid);
            # an explicit RESAMPLE_INTERVALS is checked as given
            default = [iv for iv in self.resample_intervals if iv not in self.intervals]
            object.__setattr__(self, "resample_intervals", default if "1m" in self.intervals else [])
        object.__setattr__(self, "symbols", [s.upper() for s in self.symbols])
        for s in self.symbols:
            if not _SYMBOL.match(s):
                raise ValueError(f"{symbols_var}: {s!r} is not a Binance symbol like BTCUSDT")
        if not self.symbols:
            raise ValueError(f"{symbols_var}: at least one symbol is required, e.g. SYMBOLS=BTCUSDT")
        for name, values in (
            (intervals_var, self.intervals),
            ("RESAMPLE_INTERVALS", self.resample_intervals),
        ):
            for iv in values:
                if iv not in BINANCE_INTERVALS:
                    raise ValueError(
                        f"{name}: {iv!r} is not a Binance interval; expected some of "
                        f"{','.join(BINANCE_INTERVALS)}"
                    )
        both = set(self.intervals) & set(self.resample_intervals)
        if both:
            raise ValueError(
                f"INTERVALS and RESAMPLE_INTERVALS overlap on {sorted(both)}: an interval is "
                "either ingested from Binance or built from 1m candles, not both"
            )
        if self.resample_intervals and "1m" not in self.intervals:
            raise ValueError("RESAMPLE_INTERVALS needs 1m in INTERVALS (higher bars are built from 1m)")
        for iv in self.resample_intervals:
            if interval_ms(iv) <= 60_000:
                raise ValueError(f"RESAMPLE_INTERVALS: {iv!r} is not longer than 1m")
        if self.kafka_broker_address and not re.match(
            r"^[\w.\-]+:\d+(,[\w.\-]+:\d+)*$", self.kafka_broker_address
        ):
            raise ValueError(
                f"KAFKA_BROKER_ADDRESS: {self.kafka_broker_address!r} is not host:port[,host:port]"
            )
        url = self.clickhouse_url
        if url and not re.match(r"^(chdb://|https?://)", url):
            masked = re.sub(r"(?<=:)[^:@/]*(?=@)", "***", url)  # never echo the password
            raise ValueError(
                f"CLICKHOUSE_URL: {masked!r} is neither chdb:///path nor http(s)://user:pass@host:8123/db"
            )
        return self

    # --- derived -------------------------------------------------------------------------
    @property
    def all_intervals(self) -> list[str]:
        """Ingested plus resampled intervals, shortest first."""
        return sorted({*self.intervals, *self.resample_intervals}, key=interval_ms)

    @property
    def embedded_broker(self) -> bool:
        return not self.kafka_broker_address

    @property
    def clickhouse_dsn(self) -> str:
        return self.clickhouse_url or f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def artifact_dir(self) -> Path:
        return self.model_artifact_dir or self.data_dir / "models"

    @property
    def reports_dir(self) -> Path:
        return self.report_dir or self.data_dir / "reports"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state"

    def serves(self, symbol: str, interval: str) -> bool:
        return symbol in self.symbols and interval in self.all_intervals


_ENV_NAMES = {
    "symbols": "SYMBOLS",
    "symbol": "SYMBOL",
    "intervals": "INTERVALS",
    "interval": "INTERVAL",
}


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment; invalid values raise ConfigError naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            var = _ENV_NAMES.get(loc, loc.upper()) if loc else ""
            msg = err["msg"].removeprefix("Value error, ")
            given = err.get("input")
            if var and not isinstance(given, dict):
                parts.append(f"{var}: {msg} (got {given!r})")
            else:
                parts.append(msg)
        raise ConfigError("invalid settings: " + "; ".join(parts)) from exc
