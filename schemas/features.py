"""Feature rows: the contract of ``ohlcv.features`` and of the ``features`` WebSocket event.

One row per closed candle of a (symbol, interval) stream, keyed by its ``open_time``; a row
derived again (a repair, a late fill, a gap closed) carries ``feature_version`` one above the
previous row of that open time, and the reason. The features and the gap rule are
``indicators.definitions``. The topology builds these as plain dicts; tests validate them here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from indicators.definitions import FEATURE_NAMES, FEATURES

#: the table of feature rows (``schemas/migrations/0005_features.sql``) and its written columns
TABLE = "feature_snapshots"
BAR_COLUMNS = ("open", "high", "low", "close", "volume")
#: news as known at the bar's close (``topologies.news_features``)
NEWS_COLUMNS = ("news_sentiment", "news_count", "news_stalled")
#: the news columns a model may take as inputs (``ohlcv train --news``)
NEWS_FEATURE_NAMES = ("news_sentiment", "news_count")
FEATURE_COLUMNS: tuple[str, ...] = (
    "symbol", "interval", "open_time", *FEATURE_NAMES, *NEWS_COLUMNS, "window_complete",
    "bars_missing_in_window", "window_has_repair", "feature_version", "feature_set_version", "reason",
    *BAR_COLUMNS, "bar_repaired", "carry", "event_seq", "emitted_at",
)  # fmt: skip


class RowBlock(list[dict[str, Any]]):
    """The rows of a page of new bars (``apply_many`` of new candles in order), with the same
    values as columns in ``columns`` (row key -> one value per row; ``symbol``, ``interval`` and
    ``feature_set_version``: one value for every row), so that a sink can take the columns
    instead of reading them back out of the dicts. Whoever adds a key to every row adds it to
    ``columns`` too (the topology's ``event_seq`` and ``emitted_at``, one value each)."""

    columns: dict[str, Sequence[Any]]


Reason = Literal["new", "repair", "late_fill", "gap_repaired", "rebuild", "replay"]


class _FeatureRowBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: str
    interval: str
    open_time: int = Field(description="open time of the candle the row belongs to, ms since epoch")
    window_complete: bool = Field(description="every slot of the longest lookback (50 bars) holds a bar")
    bars_missing_in_window: int = Field(ge=0, description="slots of the longest lookback with no bar")
    window_has_repair: bool = Field(description="a bar in the window was repaired or late-filled")
    feature_version: int = Field(ge=1, description="+1 each time the row is derived again")
    feature_set_version: int = Field(ge=1, description="version of the feature definitions")
    reason: Reason = Field(description="why the row was (re)derived")
    open: float = Field(description="the bar the row was derived from (traceability)")
    high: float
    low: float
    close: float
    volume: float
    bar_repaired: bool = Field(description="this bar itself was repaired or late-filled")
    event_seq: int = Field(ge=0, description="seq of the candle event that caused the row; 0: a rebuild")
    carry: list[float | None] = Field(
        description="the bar's carried intermediates [pos, r1, ema_12, ema_26, macd_signal, avg_gain, "
        "avg_loss, atr_14] (pos: index in its run of contiguous bars): what the next bar's recursive "
        "features continue from"
    )
    emitted_at: int = Field(description="ms since epoch when the topology emitted the row")
    news_sentiment: float | None = Field(
        description="mean VADER score of the stories tagged with the symbol fetched in the "
        "NEWS_FEATURE_WINDOW before the close (less NEWS_FEATURE_DELAY); null: none"
    )
    news_count: int = Field(ge=0, description="how many stories news_sentiment averages")
    news_stalled: bool = Field(
        description="no story from any source in the NEWS_SOURCE_STALL_THRESHOLD_SEC before the close "
        "(less the delay): the news input was stalled"
    )


#: the row model: the base fields and one nullable float per feature (formula as description)
FeatureRow = create_model(  # type: ignore[call-overload]
    "FeatureRow",
    __base__=_FeatureRowBase,
    __doc__="One feature row of ohlcv.features (null: the feature is undefined at that bar).",
    **{f.name: (float | None, Field(description=f.formula)) for f in FEATURES},
)
