"""Realized outcomes of scores: a scheduled ClickHouse read, not a stream.

For a stream, ``realize`` takes the current score (highest ``score_version``) of each of the
newest ``window`` scored bars whose horizon has passed, reads the candles from each bar to
``horizon`` bars later from ``ohlcv_candles FINAL`` and labels them with
``training.labels.forward_labels`` (the one label definition: no label across a gap or in the
dead zone). The labelled scores go into ``score_outcomes``; each run re-labels the whole
window, so a candle repaired since (a late fill, a revised close) re-labels its scores, and a
replay writes the same rows again (ReplacingMergeTree).

Why a query and not a stream: the label needs the candle ``horizon`` bars later, which arrives
minutes to days after the score, and may be revised; a scheduled read of stored candles sees
the repaired history without keeping scores in stream state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from clickhouse_connect.driver.client import Client

from registry.store import now_ms
from schemas.intervals import interval_ms
from training.labels import forward_labels

OUTCOME_COLUMNS = (
    "symbol",
    "interval",
    "open_time",
    "score_version",
    "model_id",
    "probability",
    "decision",
    "window_complete",
    "window_has_repair",
    "label",
    "forward_return",
    "horizon_bars",
    "realized_at",
)


@dataclass(frozen=True, slots=True)
class Realized:
    scores: int  #: current scores read (the window)
    labelled: int  #: written to score_outcomes
    unlabelled: int  #: no label: a gap in the horizon, the dead zone, or candles not there yet


def realize(
    client: Client, symbol: str, interval: str, *, horizon: int, dead_zone: float, window: int = 5000
) -> Realized:
    step = interval_ms(interval)
    res = client.query(
        "SELECT toUnixTimestamp64Milli(open_time) AS t, max(score_version) AS v, "
        "argMax(model_id, score_version), argMax(probability, score_version), "
        "argMax(decision, score_version), argMax(window_complete, score_version), "
        "argMax(window_has_repair, score_version) "
        "FROM model_inference_log FINAL WHERE symbol = {s:String} AND interval = {i:String} "
        "AND open_time <= (SELECT max(open_time) FROM ohlcv_candles WHERE symbol = {s:String} "
        "AND interval = {i:String}) - toIntervalMillisecond({h:Int64}) "
        "GROUP BY open_time ORDER BY open_time DESC LIMIT {n:UInt32}",
        parameters={"s": symbol, "i": interval, "h": horizon * step, "n": window},
    )
    rows = res.result_rows[::-1]
    if not rows:
        return Realized(0, 0, 0)
    t_scores = np.array([r[0] for r in rows], dtype=np.int64)
    candles = client.query(
        "SELECT toUnixTimestamp64Milli(open_time), close FROM ohlcv_candles FINAL "
        "WHERE symbol = {s:String} AND interval = {i:String} "
        "AND open_time BETWEEN fromUnixTimestamp64Milli({a:Int64}) AND fromUnixTimestamp64Milli({b:Int64}) "
        "ORDER BY open_time",
        parameters={
            "s": symbol,
            "i": interval,
            "a": int(t_scores[0]),
            "b": int(t_scores[-1]) + horizon * step,
        },
    ).result_columns
    if not candles or not len(candles[0]):
        return Realized(len(rows), 0, len(rows))
    t_c = np.asarray(candles[0], dtype=np.int64)
    labels, rets = forward_labels(t_c, np.asarray(candles[1], dtype=np.float64), step, horizon, dead_zone)
    at = np.searchsorted(t_c, t_scores)
    found = (at < t_c.size) & (t_c[np.minimum(at, t_c.size - 1)] == t_scores)
    now = now_ms()
    out = []
    for k, r in enumerate(rows):
        if not found[k] or np.isnan(labels[at[k]]):
            continue
        j = int(at[k])
        out.append(
            [
                symbol,
                interval,
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                int(labels[j]),
                float(rets[j]),
                horizon,
                now,
            ]
        )
    if out:
        client.insert("score_outcomes", out, column_names=list(OUTCOME_COLUMNS))
    return Realized(len(rows), len(out), len(rows) - len(out))
