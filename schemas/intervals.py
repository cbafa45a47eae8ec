"""Binance kline intervals and their lengths.

Intervals are Binance's own spellings (``1m``, ``5m``, ``1h``, ``1d`` ...). ``1M`` (a calendar
month) has no fixed length and is not supported by the candle topology, which needs a fixed
step to see gaps and to check a candle's open and close times: a ``1M`` kline is refused as an
unknown interval (dead-lettered), never stored with a guessed alignment.
"""

from __future__ import annotations

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}

#: Every fixed-length interval Binance serves for klines, shortest first.
BINANCE_INTERVALS: tuple[str, ...] = (
    "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w",
)  # fmt: skip


class UnknownIntervalError(ValueError):
    """An interval string that Binance does not serve with a fixed length."""


#: every served interval's length (ms), computed once: the topology asks per kline
_LENGTH_MS = {iv: int(iv[:-1]) * _UNIT_MS[iv[-1]] for iv in BINANCE_INTERVALS}
#: where an interval's buckets start, from the epoch (ms): weeks open on Monday, epoch + 4 days
_OFFSET_MS = {iv: 4 * 86_400_000 if iv == "1w" else 0 for iv in BINANCE_INTERVALS}


def interval_ms(interval: str) -> int:
    """Length of ``interval`` in milliseconds; raises UnknownIntervalError for anything else."""
    try:
        return _LENGTH_MS[interval]
    except (KeyError, TypeError):
        raise UnknownIntervalError(
            f"unknown interval {interval!r}: expected one of {', '.join(BINANCE_INTERVALS)}"
        ) from None


def interval_offset_ms(interval: str) -> int:
    """Where ``interval``'s buckets start from the epoch (ms): an open time ``t`` is aligned when
    ``(t - offset) % interval_ms(interval) == 0``. Raises UnknownIntervalError like interval_ms."""
    interval_ms(interval)
    return _OFFSET_MS[interval]


def bucket_start(open_time_ms: int, interval: str) -> int:
    """Open time of the ``interval`` bucket holding ``open_time_ms`` (UTC, epoch-aligned).

    Binance aligns every interval up to 1d on the Unix epoch; weekly candles open on Monday,
    which is epoch + 4 days.
    """
    step = interval_ms(interval)
    offset = interval_offset_ms(interval)
    return (open_time_ms - offset) // step * step + offset
