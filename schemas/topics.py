"""Every Kafka topic the platform uses: name, key, value contract, partitions, retention.

``ohlcv topics ensure`` creates exactly these; downstream consumers read the value models'
JSON Schemas (``ohlcv topics schemas DIR``). Every topic carries explicit ``retention.ms`` and
``retention.bytes`` because some brokers (Tansu) report no defaults and Quix Streams needs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from schemas.events import CandleEvent, DeadLetter
from schemas.features import FeatureRow
from schemas.klines import MAX_BATCH
from schemas.news import NewsArticle, RawNewsEntry
from schemas.risk import RiskDecision, RiskFill, RiskMark
from schemas.scores import ScoreRow

DAY_MS = 86_400_000


class RawKlineValue(BaseModel):
    """Value of ``binance.kline.raw``; see schemas.klines for the full contract."""

    model_config = ConfigDict(extra="allow")

    source: str = Field(description="ws | rest | import | replay | resample")
    market: str = Field(default="spot", description="spot | usdm")
    received_at: int = Field(description="ms since epoch when we received it")
    event: dict[str, Any] = Field(description="Binance kline event: {'e':'kline','E','s','k':{...}}")
    bars: int | None = Field(default=None, description="1m bars behind a resampled candle")


class RawKlineBatch(BaseModel):
    """A batch value of ``binance.kline.raw``: closed klines of one stream (schemas.klines)."""

    model_config = ConfigDict(extra="allow")

    source: str = Field(description="rest | import | replay | resample")
    market: str = Field(default="spot", description="spot | usdm")
    received_at: int = Field(description="ms since epoch when we received them")
    symbol: str
    interval: str
    klines: list[list[Any]] = Field(
        min_length=1, max_length=MAX_BATCH,
        description="Binance REST kline rows [t, o, h, l, c, v, T, q, n, V, Q, ignore], all closed",
    )  # fmt: skip
    bars: list[int] | None = Field(default=None, description="1m bars behind each resampled row")


class GapQueued(BaseModel):
    """Value of ``ohlcv.gap.queue``: a gap segment a continuity scan opened (or merged into) in
    ``gap_segments``, announced so a running gap orchestrator repairs it now. The topology
    announces the segments it detects itself, as ``gap_detected`` events."""

    symbol: str
    interval: str
    segment_id: int = Field(description="open time of the segment's first missing bar")
    from_open_time: int
    to_open_time: int
    missing_bars: int = Field(ge=1)
    queued_at: int = Field(description="ms since epoch when the scan wrote the segment")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    value_schema: dict[str, Any]
    description: str
    partitions: int = 3
    cleanup_policy: str = "delete"
    retention_ms: int = 7 * DAY_MS
    retention_bytes: int = -1
    extra_config: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, str]:
        return {
            "cleanup.policy": self.cleanup_policy,
            "retention.ms": str(self.retention_ms),
            "retention.bytes": str(self.retention_bytes),
            **self.extra_config,
        }


RAW_KLINES = TopicSpec(
    name="binance.kline.raw",
    key="'SYMBOL:interval', e.g. 'BTCUSDT:1m' (UTF-8)",
    value_schema=TypeAdapter(RawKlineValue | RawKlineBatch).json_schema(),
    description="Every kline from every source (websocket, REST repair, importers, resampler).",
)
CANDLE_EVENTS = TopicSpec(
    name="ohlcv.candle.events",
    key="'SYMBOL:interval' (UTF-8)",
    value_schema=TypeAdapter(CandleEvent).json_schema(),
    description="partial_update, partial_close, append, repair, gap_detected, gap_repaired; "
    "per-key seq increases by one.",
)
DEAD_LETTER = TopicSpec(
    name="ohlcv.deadletter",
    key="the original key, or the file name",
    value_schema=DeadLetter.model_json_schema(),
    description="Records that could not be used, with the reason and source position.",
    partitions=1,
    retention_ms=30 * DAY_MS,
)

GAP_QUEUE = TopicSpec(
    name="ohlcv.gap.queue",
    key="'SYMBOL:interval' (UTF-8)",
    value_schema=GapQueued.model_json_schema(),
    description="Gap segments a continuity scan opened while the stack runs; read by the gap orchestrator.",
    partitions=1,
)

FEATURES = TopicSpec(
    name="ohlcv.features",
    key="'SYMBOL:interval' (UTF-8)",
    value_schema=FeatureRow.model_json_schema(),
    description="One feature row per closed candle (again, feature_version + 1, when history changes).",
)

SCORES = TopicSpec(
    name="ohlcv.scores",
    key="'SYMBOL:interval' (UTF-8)",
    value_schema=ScoreRow.model_json_schema(),
    description="One score per feature row by the stream's production model (again, score_version + 1, "
    "when the feature row is derived again).",
)


class LockMessage(BaseModel):
    """A claim or release of a named lock (``retrain.lock``): the topic's one partition orders
    every claim, so every reader agrees who holds a lock."""

    op: Literal["claim", "release"]
    name: str = Field(description="e.g. 'retrain:XRPUSDT:1m'")
    token: str = Field(description="unique per claim; a release names the claim it ends")
    owner: str = Field(description="host:pid of the claimant")
    at: int = Field(description="ms since epoch, the claimant's clock")
    ttl_ms: int = Field(ge=1, description="a claim not released within ttl_ms of `at` lapses")


LOCKS = TopicSpec(
    name="ohlcv.locks",
    key="the lock name (UTF-8)",
    value_schema=LockMessage.model_json_schema(),
    description="Claims and releases of cross-process locks (one retrain per stream at a time).",
    partitions=1,
    retention_ms=DAY_MS,
)

NEWS_RAW = TopicSpec(
    name="news.raw",
    key="the source name (UTF-8)",
    value_schema=RawNewsEntry.model_json_schema(),
    description="Every RSS/Atom entry as polled, with its source and poll (streams/rss.py).",
    partitions=1,
)

NEWS_ARTICLES = TopicSpec(
    name="news.articles",
    key="the article id (UTF-8)",
    value_schema=NewsArticle.model_json_schema(),
    description="Each unique story once: deduplicated across polls and sources, normalized, with sentiment.",
    partitions=1,
    retention_ms=30 * DAY_MS,
)

RISK_EVENTS = TopicSpec(
    name="risk.events",
    key="'SYMBOL:interval' (UTF-8)",
    value_schema={
        "oneOf": [
            RiskDecision.model_json_schema(),
            RiskFill.model_json_schema(),
            RiskMark.model_json_schema(),
        ]
    },
    description="Each stream's simulated book: a decision per scored bar (enter, exit, stop, hold, refused "
    "with a reason), each fill at the next bar's open, the mark at each close (topologies/risk.py).",
    retention_ms=30 * DAY_MS,
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    RAW_KLINES,
    CANDLE_EVENTS,
    DEAD_LETTER,
    GAP_QUEUE,
    FEATURES,
    SCORES,
    LOCKS,
    NEWS_RAW,
    NEWS_ARTICLES,
    RISK_EVENTS,
)


def topic_by_name(name: str) -> TopicSpec:
    for spec in ALL_TOPICS:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown topic {name!r}: known topics are {[t.name for t in ALL_TOPICS]}")
