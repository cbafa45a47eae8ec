"""The training rows of one stream, read from ClickHouse: feature rows (``feature_snapshots``
FINAL, the features of ``indicators.definitions``) with the label of ``training.labels``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from clickhouse_connect.driver.client import Client

from indicators.definitions import FEATURE_NAMES, FEATURE_SET_VERSION
from ohlcv.errors import OhlcvError
from schemas.features import NEWS_FEATURE_NAMES
from schemas.intervals import interval_ms
from training.labels import forward_labels


class NoTrainingDataError(OhlcvError):
    """The requested stream and range have no labelled feature rows to train on."""


@dataclass(frozen=True, slots=True)
class TrainingRows:
    symbol: str
    interval: str
    open_times: np.ndarray  #: int64 ms, ascending
    x: np.ndarray  #: float64 (rows, features), NaN where a feature is null
    y: np.ndarray  #: 0.0 / 1.0
    feature_names: tuple[str, ...]
    excluded_incomplete: int  #: labelled rows left out for window_complete = false
    unlabelled: int  #: rows in range without a label (gap or end in the horizon, dead zone)


def load_rows(
    client: Client,
    symbol: str,
    interval: str,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    horizon: int = 5,
    dead_zone: float = 0.0,
    include_incomplete: bool = False,
    news: bool = False,
) -> TrainingRows:
    """Labelled feature rows with open time in ``[start_ms, end_ms]`` (None: unbounded). The
    labels look ``horizon`` bars past ``end_ms``, so the read extends that far. ``news``: the
    news columns (``news_sentiment``, ``news_count``) are inputs too."""
    step = interval_ms(interval)
    names = (*FEATURE_NAMES, *NEWS_FEATURE_NAMES) if news else FEATURE_NAMES
    cols = ", ".join(names)
    where = ["symbol = {s:String}", "interval = {i:String}", "feature_set_version = {v:UInt16}"]
    params: dict[str, object] = {"s": symbol, "i": interval, "v": FEATURE_SET_VERSION}
    if start_ms is not None:
        where.append("open_time >= fromUnixTimestamp64Milli({a:Int64})")
        params["a"] = start_ms
    if end_ms is not None:
        where.append("open_time <= fromUnixTimestamp64Milli({b:Int64})")
        params["b"] = end_ms + horizon * step
    res = client.query(
        f"SELECT toUnixTimestamp64Milli(open_time), close, window_complete, {cols} "  # noqa: S608 - constants
        f"FROM feature_snapshots FINAL WHERE {' AND '.join(where)} ORDER BY open_time",
        parameters=params,
    )
    rc = res.result_columns
    if not rc or not len(rc[0]):
        raise NoTrainingDataError(
            f"no feature rows for {symbol} {interval} in the range (run `ohlcv features rebuild`?)"
        )
    t = np.asarray(rc[0], dtype=np.int64)
    close = np.asarray(rc[1], dtype=np.float64)
    complete = np.asarray(rc[2], dtype=bool)
    x = np.array([[np.nan if v is None else v for v in col] for col in rc[3:]], dtype=np.float64).T
    y, _ = forward_labels(t, close, step, horizon, dead_zone)
    in_range = np.ones(t.size, dtype=bool) if end_ms is None else t <= end_ms
    labelled = in_range & ~np.isnan(y)
    keep = labelled if include_incomplete else labelled & complete
    if not keep.any():
        raise NoTrainingDataError(
            f"no labelled {'' if include_incomplete else 'complete-window '}feature rows for "
            f"{symbol} {interval} in the range"
        )
    return TrainingRows(
        symbol,
        interval,
        t[keep],
        x[keep],
        y[keep],
        names,
        int((labelled & ~complete).sum()) if not include_incomplete else 0,
        int((in_range & np.isnan(y)).sum()),
    )
