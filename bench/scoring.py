"""Scoring and monitoring: rows/s of the scoring topology against CatBoost's own batch predict
(the ceiling), closed candle -> score latency, training time (the XRP dump and a symbol-year),
report generation time.

Run: ``.venv/bin/python -m bench.scoring [throughput] [reports] [latency] [training_year]``
(all four by default). Prints one JSON object.

- Training: the real XRP 1m dump's feature rows (61,274 bars; the default 300 iterations,
  depth 6, two threads) through ``training.train.train_model`` into chDB.
- Ceiling: ``predict_proba`` over the feature matrix of the scored rows at once, and the
  per-row call the topology makes (``LoadedModel.probability``: numpy trees,
  ``registry.trees``), outside Kafka, and CatBoost's own single-row ``predict`` for comparison.
- Topology: the newest 60,000 rows four times over (each copy later in time: 240,000 rows)
  produced onto the features topic, the scoring Application
  alone, from its first record to the last one processed (``processed_rows_per_s``) and to
  its last ClickHouse write (``topology_rows_per_s``: includes the wait for the last
  checkpoint, up to one commit interval, 1 s).
- Latency (the live shape, features step included): single-candle ``append`` events at 200/s
  into one Application running the features step with inline scoring (as ``ohlcv up``); per
  bar, the score's arrival on ``ohlcv.scores`` at a consumer minus the event's production time,
  with the feature row's arrival on ``ohlcv.features`` for the split. Then the same through the
  features topic: a scoring dataframe reading ``ohlcv.features`` in the same Application (the
  extra hop of a scorer scaled apart, ``ohlcv run scoring``).
- Reports: realized outcomes of the scored rows, then the Evidently data drift report (5,000
  reference rows, 200 current) and the classification report (500 realized scores); the first
  includes importing Evidently.
- Training a symbol-year: 525,600 1m bars (the XRP dump laid end to end, as in
  ``bench.features_topology``), their feature rows, the default 300 iterations on two threads.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Producer

from indicators.definitions import FEATURE_NAMES
from ohlcv.infra.broker import EmbeddedBroker
from ohlcv.infra.clickhouse import make_client, migrate
from registry.loader import load_model
from registry.store import Registry
from sinks.features import write_features
from sinks.scores import ScoreRows
from tests.topologies.helpers import PlainState, xrp_candles
from tests.topologies.pipeline import unique_topics
from topologies.feature_logic import FeatureStream
from topologies.news_features import NewsBook
from topologies.runner import TopologyConfig, build_features_application, build_scoring_application, tune_gc
from training.train import train_model

LAT_N = 2000
LAT_PER_S = 200


def latency(address: str, url: str, db: str, ch: Any, *, inline: bool = True) -> dict[str, Any]:
    """Closed candle event -> feature row -> score, in one Application: scored inline in the
    features step (``ohlcv up``), or (``inline=False``) by a scoring dataframe on the features
    topic in the same Application (the hop a scorer scaled apart makes)."""
    import threading

    from confluent_kafka import Consumer, TopicPartition

    from bench.api_bench import pct
    from bench.features_topology import config, paced_appends
    from ohlcv.infra.broker import EMBEDDED_CONSUMER_CONFIG
    from schemas.topics import FEATURES, SCORES
    from topologies.runner import add_scoring

    ch.command("TRUNCATE TABLE feature_snapshots")  # the live stream starts with no stored rows
    candles = list(xrp_candles())
    topics = unique_topics(address, f"l{uuid.uuid4().hex[:6]}.")
    cfg = replace(config(address, topics, url, db), scores_topic=topics["scores"], model_poll_s=1.0)
    app = build_features_application(cfg, score_inline=inline)
    if not inline:
        add_scoring(app, cfg)
    sent: dict[int, float] = {}
    got: dict[str, dict[int, float]] = {"features": {}, "scores": {}}
    errors: list[BaseException] = []

    def consume() -> None:
        c = Consumer({"bootstrap.servers": address, "group.id": f"r-{uuid.uuid4().hex[:6]}",
                      "enable.auto.commit": False, **EMBEDDED_CONSUMER_CONFIG})  # fmt: skip
        c.assign([TopicPartition(topics["features"], p, 0) for p in range(FEATURES.partitions)]
                 + [TopicPartition(topics["scores"], p, 0) for p in range(SCORES.partitions)])  # fmt: skip
        deadline = time.monotonic() + 120
        while min(map(len, got.values())) < LAT_N + 50 and time.monotonic() < deadline:
            m = c.poll(0.05)
            if m is not None and m.error() is None:
                role = "scores" if m.topic() == topics["scores"] else "features"
                got[role].setdefault(orjson.loads(m.value())["open_time"], time.perf_counter())
        c.close()

    def produce() -> None:
        paced_appends(
            address, topics["events"], candles, LAT_N, LAT_PER_S, lambda: len(got["scores"]), sent, errors
        )

    threads = [threading.Thread(target=consume, daemon=True), threading.Thread(target=produce, daemon=True)]
    for th in threads:
        th.start()
    app.run(timeout=4)
    for th in threads:
        th.join(30)
    assert not errors, errors
    ms = sorted((got["scores"][t] - s) * 1000 for t, s in sent.items() if t in got["scores"])
    assert len(ms) == LAT_N, f"{len(ms)} of {LAT_N} scores arrived"
    feat = sorted((got["features"][t] - s) * 1000 for t, s in sent.items())
    step = sorted((got["scores"][t] - got["features"][t]) * 1000 for t in sent)
    return {"events": LAT_N, "per_s": LAT_PER_S, "p50_ms": round(pct(ms, 0.5), 2),
            "p99_ms": round(pct(ms, 0.99), 2), "max_ms": round(ms[-1], 2),
            "to_feature_row_p50_p99_ms": [round(pct(feat, q), 2) for q in (0.5, 0.99)],
            "feature_row_to_score_p50_p99_ms": [round(pct(step, q), 2) for q in (0.5, 0.99)]}  # fmt: skip


def _timed_run(app: Any, writes: Any) -> tuple[float, float]:
    """Run ``app`` until idle: seconds from its first record processed to its last one, and to
    its last ``writes.write`` (the sink's write of a checkpoint: ``FeatureRows``, ``ScoreRows``)."""
    first: list[float] = []
    last: list[float] = []
    done: list[float] = []

    def processed(*a: Any) -> None:
        done[:] = [time.perf_counter()]
        if not first:
            first.append(done[0])

    app._on_message_processed = processed
    write = writes.write

    def timed(self: Any, client: Any) -> None:
        write(self, client)
        last[:] = [time.perf_counter()]

    writes.write = timed
    try:
        app.run(timeout=5)
    finally:
        writes.write = write
    return done[0] - first[0], last[0] - first[0]


def inline_throughput(address: str, url: str, db: str, ch: Any, model: Any) -> dict[str, Any]:
    """Batch replay through the features step with inline scoring (``ohlcv up``) against the
    features step alone, over the same candle events in the same run: the process's rows/s
    both ways, the marginal cost of scoring a row inline, and CatBoost's batch predict over the
    same feature rows (the ceiling)."""
    from bench.features_topology import BATCH, append_event, config, year_of_candles
    from sinks.features import FeatureRows

    candles = year_of_candles()[:INLINE_BARS]
    events = [
        append_event(candles[i : i + BATCH], seq, 0) for seq, i in enumerate(range(0, len(candles), BATCH), 1)
    ]
    out: dict[str, Any] = {"bars": len(candles)}
    for inline in (False, True, False, True):
        ch.command("TRUNCATE TABLE feature_snapshots")
        ch.command("TRUNCATE TABLE model_inference_log")
        topics = unique_topics(address, f"i{uuid.uuid4().hex[:6]}.")
        p = Producer({"bootstrap.servers": address, "linger.ms": 20, "partitioner": "murmur2"})
        for e in events:
            p.produce(topics["events"], key="XRPUSDT:1m", value=e)
            p.poll(0)
        p.flush(60)
        cfg = replace(config(address, topics, url, db), scores_topic=topics["scores"])
        app = build_features_application(cfg, score_inline=inline)
        tune_gc()
        _, secs = _timed_run(app, FeatureRows)
        scores = ch.query("SELECT count() FROM model_inference_log FINAL").result_rows[0][0]
        assert scores == (len(candles) if inline else 0), f"{scores} scores stored"
        name = "inline_scoring" if inline else "features_alone"
        out.setdefault(name, []).append(round(len(candles) / secs))
    # the feature matrix of the rows scored (a null is NaN)
    x = np.array(ch.query(f"SELECT {', '.join(FEATURE_NAMES)} FROM feature_snapshots FINAL").result_rows,
                 dtype=np.float64)  # fmt: skip
    t0 = time.perf_counter()
    model.model.predict_proba(x)
    ceiling = len(x) / (time.perf_counter() - t0)
    best_alone, best_inline = max(out["features_alone"]), max(out["inline_scoring"])
    marginal_us = 1e6 / best_inline - 1e6 / best_alone
    out["catboost_batch_rows_per_s"] = round(ceiling)
    out["scoring_marginal_us_per_row"] = round(marginal_us, 2)
    out["scoring_marginal_rows_per_s"] = round(1e6 / marginal_us) if marginal_us > 0 else None
    out["process_share_of_batch_ceiling"] = round(best_inline / ceiling, 4)
    return out


def report_times(ch: Any, model_id: str, d: str) -> dict[str, Any]:
    from monitoring import drift, live
    from monitoring.outcomes import realize
    from reports.evidently_reports import classification, data_drift
    from sinks.clickhouse_bulk import insert_candles

    insert_candles(ch, xrp_candles())
    t0 = time.perf_counter()
    r = realize(ch, "XRPUSDT", "1m", horizon=5, dead_zone=0.0, window=N)
    realize_s = time.perf_counter() - t0
    model = Registry(ch).model(model_id)
    t0 = time.perf_counter()
    ref = drift.reference_rows(ch, model)
    cur = drift.current_rows(ch, "XRPUSDT", "1m", 200)
    rows_s = time.perf_counter() - t0
    out: dict[str, Any] = {"outcomes_labelled": r.labelled, "outcomes_seconds": round(realize_s, 2),
                           "drift_rows_seconds": round(rows_s, 2)}  # fmt: skip
    real = [(x[0], x[1], x[2]) for x in live.realized(ch, model_id, "XRPUSDT", "1m", 500) if x[3]][:500]
    for name in ("first_incl_import", "second"):
        t0 = time.perf_counter()
        rep = Path(d) / "reports"
        a = data_drift(ref, cur, model.feature_names, out_dir=rep, symbol="XRPUSDT", interval="1m",
                       model_id=model_id)  # fmt: skip
        t1 = time.perf_counter()
        b = classification(
            real, out_dir=Path(d) / "reports", symbol="XRPUSDT", interval="1m", model_id=model_id
        )
        t2 = time.perf_counter()
        out[name] = {"data_drift_s": round(t1 - t0, 2), "classification_s": round(t2 - t1, 2),
                     "html_mb": [round(a.bytes / 1e6, 1), round(b.bytes / 1e6, 1)]}  # fmt: skip
    return out


def train_year(d: str) -> dict[str, Any]:
    from bench.features_topology import year_of_candles

    cs = year_of_candles()
    ch = make_client(f"chdb://{d}/ch", "year")
    migrate(ch)
    fs, state = FeatureStream(), PlainState()
    t0 = time.perf_counter()
    for at in range(0, len(cs), 5000):
        rows = fs.apply_many(cs[at : at + 5000], ["new"] * len(cs[at : at + 5000]), state)
        NewsBook().annotate(rows)
        write_features(ch, [dict(r, event_seq=1, emitted_at=0) for r in rows])
    feats_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = train_model(ch, "XRPUSDT", "1m", artifact_dir=Path(d) / "models-year", thread_count=2)
    secs = time.perf_counter() - t0
    return {"bars": len(cs), "features_seconds": round(feats_s, 1), "seconds": round(secs, 1),
            "fit_seconds": round(m.train_seconds, 1), "rows": m.train_rows + m.validation_rows,
            "validation_auc": round(m.metrics["auc"], 4)}  # fmt: skip


N = 60_000
INLINE_BARS = 4 * 61_274  # the XRP dump four times over, laid end to end


def main(parts: tuple[str, ...] = ("throughput", "reports", "latency", "training_year")) -> None:
    cs = xrp_candles()
    fs, state = FeatureStream(), PlainState()
    rows: list[dict[str, Any]] = []
    for at in range(0, len(cs), 1000):
        rows += fs.apply_many(cs[at : at + 1000], ["new"] * len(cs[at : at + 1000]), state)
    NewsBook().annotate(rows)
    rows = [dict(r, event_seq=1, emitted_at=0) for r in rows]
    out: dict[str, Any] = {}
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as d:
        url, db = f"chdb://{d}/ch", "bench"
        ch = make_client(url, db)
        migrate(ch)
        write_features(ch, rows)
        t0 = time.perf_counter()
        m = train_model(ch, "XRPUSDT", "1m", artifact_dir=Path(d) / "models", thread_count=2)
        out["training"] = {
            "rows": m.train_rows + m.validation_rows, "seconds": round(time.perf_counter() - t0, 2),
            "fit_seconds": round(m.train_seconds, 2), "validation_auc": round(m.metrics["auc"], 4),
        }  # fmt: skip
        Registry(ch).promote(m.model_id)
        loaded = load_model(Registry(ch), m.model_id)
        if "throughput" in parts:
            # the newest N rows four times over, each copy later in time (a run of ~10 s: the
            # wait for the last checkpoint, up to 1 s, is not most of it)
            span = rows[-1]["open_time"] - rows[-N]["open_time"] + 60_000
            live = [dict(r, open_time=r["open_time"] + k * span) for k in range(4) for r in rows[-N:]]
            x = np.array([[np.nan if r[n] is None else r[n] for n in FEATURE_NAMES] for r in live])
            t0 = time.perf_counter()
            loaded.model.predict_proba(x)
            batch_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for r in live[:2000]:
                loaded.probability(r)
            per_row_s = (time.perf_counter() - t0) / 2000
            t0 = time.perf_counter()
            for r in live[:2000]:
                loaded.model.predict([[np.nan if r[n] is None else r[n] for n in FEATURE_NAMES]],
                                     prediction_type="Probability", thread_count=1)  # fmt: skip
            catboost_row_s = (time.perf_counter() - t0) / 2000
            topics = unique_topics(broker.address, f"s{uuid.uuid4().hex[:6]}.")
            p = Producer({"bootstrap.servers": broker.address, "linger.ms": 20})
            for r in live:
                p.produce(topics["features"], key="XRPUSDT:1m", value=orjson.dumps(r))
                p.poll(0)
            p.flush(60)
            cfg = TopologyConfig(
                broker_address=broker.address, clickhouse_url=url, clickhouse_database=db,
                consumer_group=f"s-{uuid.uuid4().hex[:6]}", state_dir=Path(d) / "state",
                features_topic=topics["features"], scores_topic=topics["scores"],
            )  # fmt: skip
            app = build_scoring_application(cfg)
            tune_gc()
            processed_s, written_s = _timed_run(app, ScoreRows)
            stored = ch.query("SELECT count() FROM model_inference_log FINAL").result_rows[0][0]
            assert stored == len(live), f"{stored} of {len(live)} scores stored"
            out["scoring"] = {
                "rows": len(live), "topology_rows_per_s": round(len(live) / written_s),
                "processed_rows_per_s": round(len(live) / processed_s),
                "catboost_batch_rows_per_s": round(len(live) / batch_s),
                "per_row_predict_us": round(per_row_s * 1e6, 1),
                "per_row_ceiling_rows_per_s": round(1 / per_row_s),
                "catboost_single_row_predict_us": round(catboost_row_s * 1e6, 1),
                "share_of_batch_ceiling": round(len(live) / processed_s / (len(live) / batch_s), 4),
            }  # fmt: skip
        if "inline" in parts:
            out["inline"] = inline_throughput(broker.address, url, db, ch, loaded)
        if "reports" in parts:
            out["reports"] = report_times(ch, m.model_id, d)
        if "latency" in parts:
            out["latency"] = latency(broker.address, url, db, ch)  # inline, as ``ohlcv up``
            out["latency_through_the_features_topic"] = latency(broker.address, url, db, ch, inline=False)
        if "training_year" in parts:
            out["training_year"] = train_year(d)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    import sys

    main(tuple(sys.argv[1:]) or ("throughput", "reports", "latency", "training_year"))
