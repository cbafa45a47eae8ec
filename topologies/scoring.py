"""The scoring topology: feature rows in (``ohlcv.features``), score rows out (``ohlcv.scores``,
``model_inference_log``).

``build_scoring`` is a pure builder: a stateless ``apply`` scores each feature row with the
production model of its stream (``registry.loader.ProductionModels``; none yet: the row is
counted as unscored and passed over), ``publish`` produces the score, ``sink`` writes it. The
score carries the row's gap flags (``window_complete``, ``window_has_repair``,
``bars_missing_in_window``) so model QA can split scores on incomplete or repaired windows from
the rest, and ``score_version`` = the row's ``feature_version``, so a row re-derived after a
repair is scored again one version higher and a replayed record writes the same score again.

Inline scoring (``score_inline``): where the features and the scoring stages run in one
Application (``ohlcv up``), the rows are scored inside the features dataframe, after they are
published, instead of going out to ``ohlcv.features`` and back in through a second consumer:
one broker hop less between a closed candle and its score (the hop costs ~5 ms at the median on
the embedded broker), and a page of rows (an ``append`` of history) scored at once. The scores
are the same (same model lookup, same per-row floats, same score rows); the sink
(``sinks.scores.ClickHouseFeatureScoreSink``) writes both tables before Quix commits the
event's offset. ``ohlcv run scoring`` (a scorer scaled apart) reads the topic as above.
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
from schemas.scores import ScoredRows
from topologies.producing import FastProducer

SCORED = Counter("inference_scores_total", "Feature rows scored", ["interval", "window"])
UNSCORED = Counter("inference_unscored_total", "Feature rows passed over", ["reason"])


def score_row(
    row: dict[str, Any], model: Any, threshold: float, now_ms: int, p: float | None = None
) -> dict[str, Any]:
    """The score of one feature row by ``model`` (a ``LoadedModel``); ``p``: its probability,
    when already computed with the rest of its page."""
    if p is None:
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


def make_rows_scoring_step(models: ProductionModels, threshold: float) -> Any:
    """Scores of a record's feature rows (of one stream, as a feature record or a features
    step's output holds them): each row with the production model of its stream; none: the
    rows are counted as unscored and passed over."""
    scored: dict[tuple[str, bool], Any] = {}  # labelled counters, looked up once

    def apply(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not rows:
            return []
        r0 = rows[0]
        model = models.get(r0["symbol"], r0["interval"])
        if model is None:
            UNSCORED.labels("no_production_model").inc(len(rows))
            return []
        ok = [r for r in rows if r["feature_set_version"] == model.feature_set_version]
        if len(ok) < len(rows):
            # the model learned other feature definitions: its score would be meaningless
            UNSCORED.labels("feature_set_mismatch").inc(len(rows) - len(ok))
        now = int(time.time() * 1000)
        ps = model.probabilities(ok)
        out = [score_row(r, model, threshold, now, p) for r, p in zip(ok, ps, strict=True)]
        for r in ok:
            k = (r["interval"], r["window_complete"])
            if (c := scored.get(k)) is None:
                c = scored[k] = SCORED.labels(k[0], "complete" if k[1] else "incomplete")
            c.inc()
        return out

    return apply


def make_scoring_step(models: ProductionModels, threshold: float) -> Any:
    """The step of the scoring topology: one feature row (a record of ``ohlcv.features``)."""
    many = make_rows_scoring_step(models, threshold)

    def apply(row: dict[str, Any]) -> list[dict[str, Any]]:
        return many([row])  # type: ignore[no-any-return]

    return apply


class ScorePublisher:
    def __init__(self, producer: Any, topic: Topic):
        self.producer = FastProducer(producer)
        self.topic = topic.name

    def __call__(self, rows: list[dict[str, Any]], key: Any, timestamp: int, headers: Any) -> None:
        if rows:
            self.producer.produce(self.topic, map(orjson.dumps, rows), key, timestamp)


def score_inline(
    rows: StreamingDataFrame, *, models: ProductionModels, threshold: float, scores_topic: Topic
) -> StreamingDataFrame:
    """Wire inline scoring onto ``rows`` (the features dataframe after publishing: one list of
    feature rows per candle event); its values become ``ScoredRows``, for a sink of both."""
    step = make_rows_scoring_step(models, threshold)
    publish = ScorePublisher(rows.processing_context.producer, scores_topic)
    out = rows.apply(lambda rs: ScoredRows(rs, step(rs)))
    return out.update(lambda v, key, ts, headers: publish(v.scores, key, ts, headers), metadata=True)


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
