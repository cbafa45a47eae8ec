"""The scoring topology: feature rows in (``ohlcv.features``), score rows out (``ohlcv.scores``,
``model_inference_log``).

``build_scoring`` is a pure builder: a stateless ``apply`` scores each feature row with the
production model of its stream (``registry.loader.ProductionModels``; none yet: the row is
counted as unscored and passed over), ``publish`` produces the score, ``sink`` writes it. The
score carries the row's gap flags (``window_complete``, ``window_has_repair``,
``bars_missing_in_window``) so model QA can split scores on incomplete or repaired windows from
the rest, and ``score_version`` = the row's ``feature_version``, so a row re-derived after a
repair is scored again one version higher and a replayed record writes the same score again.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from prometheus_client import Counter
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.models import Topic
from quixstreams.sinks import BaseSink

from registry.loader import ProductionModels
from topologies.producing import FastProducer

SCORED = Counter("inference_scores_total", "Feature rows scored", ["interval", "window"])
UNSCORED = Counter("inference_unscored_total", "Feature rows passed over", ["reason"])


def score_row(row: dict[str, Any], model: Any, threshold: float, now_ms: int) -> dict[str, Any]:
    """The score of one feature row by ``model`` (a ``LoadedModel``)."""
    p = model.probability(row)
    return {
        "symbol": row["symbol"], "interval": row["interval"], "open_time": row["open_time"],
        "score_version": row["feature_version"], "feature_version": row["feature_version"],
        "feature_set_version": row["feature_set_version"], "model_id": model.model_id,
        "model_version": model.version, "probability": p, "decision": p >= threshold, "threshold": threshold,
        "window_complete": row["window_complete"], "window_has_repair": row["window_has_repair"],
        "bars_missing_in_window": row["bars_missing_in_window"], "reason": row["reason"],
        "event_seq": row["event_seq"], "feature_emitted_at": row["emitted_at"], "scored_at": now_ms,
        "bar_open": row["open"], "bar_close": row["close"],
    }  # fmt: skip


def make_scoring_step(models: ProductionModels, threshold: float) -> Any:
    scored: dict[tuple[str, bool], Any] = {}  # labelled counters, looked up once

    def apply(row: dict[str, Any]) -> list[dict[str, Any]]:
        model = models.get(row["symbol"], row["interval"])
        if model is None:
            UNSCORED.labels("no_production_model").inc()
            return []
        if row["feature_set_version"] != model.feature_set_version:
            # the model learned other feature definitions: its score would be meaningless
            UNSCORED.labels("feature_set_mismatch").inc()
            return []
        out = score_row(row, model, threshold, int(time.time() * 1000))
        k = (row["interval"], row["window_complete"])
        if (c := scored.get(k)) is None:
            c = scored[k] = SCORED.labels(k[0], "complete" if k[1] else "incomplete")
        c.inc()
        return [out]

    return apply


class ScorePublisher:
    def __init__(self, producer: Any, topic: Topic):
        self.producer = FastProducer(producer)
        self.topic = topic.name

    def __call__(self, rows: list[dict[str, Any]], key: Any, timestamp: int, headers: Any) -> None:
        if rows:
            self.producer.produce(self.topic, map(orjson.dumps, rows), key, timestamp)


def build_scoring(
    sdf: StreamingDataFrame, *, models: ProductionModels, threshold: float, scores_topic: Topic,
    sink: BaseSink | None,
) -> StreamingDataFrame:  # fmt: skip
    """Wire the scoring steps onto ``sdf`` (the features topic, JSON rows)."""
    out = sdf.apply(make_scoring_step(models, threshold))
    out = out.update(ScorePublisher(sdf.processing_context.producer, scores_topic), metadata=True)
    if sink is not None:
        out.sink(sink)
    return out
