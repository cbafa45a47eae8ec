"""What every history importer shares: the error policy, row validation and the columnar block.

Contract of a reader: it yields ``schemas.klines.Candle`` with ``source="import"`` and
``is_closed=True``, in file order, one per good row; it never fills gaps and never invents a
field the file lacks (``None``). A row it cannot use is either fatal (mode ``"strict"``: one
``ImportFileError`` naming file and line) or handed to ``on_bad_row`` (mode ``"dead-letter"``)
and skipped. A file that cannot be opened or read at all is always one ``ImportFileError``.

Every row is held to the raw-topic contract (``schemas.klines.candle_from_raw``): prices and
volumes finite and non-negative, ``low <= open, close <= high``, ``open_time`` aligned to the
interval (weeks on Monday, ``schemas.intervals.interval_offset_ms``), ``close_time == open_time +
interval - 1 ms`` and a non-negative trade count. A row that passes here is a row the candle
topology accepts; the reasons are worded by this module (with the file and line), not by the
parser's.

Timestamps: Binance Vision spot files switched from milliseconds to microseconds on
2025-01-01, so the unit is decided per value by magnitude (``to_ms``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
from numpy.typing import NDArray

from ohlcv.errors import OhlcvError
from schemas.intervals import UnknownIntervalError, bucket_start, interval_ms, interval_offset_ms
from schemas.klines import Candle

ErrorMode = Literal["strict", "dead-letter"]
ERROR_MODES: tuple[str, ...] = ("strict", "dead-letter")

#: a timestamp at or above this is in microseconds (1e14 ms is the year 5138; 1e14 µs is 1973)
MICROS_THRESHOLD = 10**14

T = TypeVar("T")

_SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")


class ImportFileError(OhlcvError):
    """A history file or one of its rows cannot be used; names the file and, for a row, the line."""

    def __init__(self, path: str | Path, reason: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {reason}")


class RowError(ValueError):
    """One row cannot be used; the message is the reason (no position: the caller adds it)."""


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row refused in dead-letter mode: where it was, why, and its original text."""

    path: str
    line: int
    reason: str
    payload: str

    @property
    def source(self) -> str:
        """``file:line`` as the dead-letter contract spells a file position."""
        return f"{self.path}:{self.line}"


OnBadRow = Callable[[BadRow], None]


@dataclass(frozen=True, slots=True)
class FileSpec:
    """What a file holds, from its name or the caller's overrides."""

    path: str
    symbol: str
    interval: str
    step_ms: int


def file_spec(path: str | Path, symbol: str | None, interval: str | None) -> FileSpec:
    """Validate the (possibly overridden) symbol and interval of ``path``."""
    if symbol is None or interval is None:
        missing = " and ".join(n for n, v in (("symbol", symbol), ("interval", interval)) if v is None)
        raise ImportFileError(path, f"cannot tell the {missing} from the file name; pass --symbol/--interval")
    sym = symbol.replace("/", "").replace("_", "").replace("-", "").upper()
    if not _SYMBOL.match(sym):
        raise ImportFileError(path, f"symbol {symbol!r} is not a Binance symbol like BTCUSDT")
    try:
        step = interval_ms(interval)
    except UnknownIntervalError as exc:
        raise ImportFileError(path, str(exc)) from exc
    return FileSpec(path=str(path), symbol=sym, interval=interval, step_ms=step)


def require_file(path: str | Path) -> None:
    """ImportFileError unless ``path`` is an existing regular file (checked before anything else)."""
    p = Path(path)
    if not p.exists():
        raise ImportFileError(p, "no such file")
    if not p.is_file():
        raise ImportFileError(p, "is not a regular file")


def check_mode(mode: str, on_bad_row: OnBadRow | None) -> None:
    if mode not in ERROR_MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(ERROR_MODES)}")
    if mode == "dead-letter" and on_bad_row is None:
        raise ValueError("dead-letter mode needs an on_bad_row callback")


@dataclass(frozen=True, slots=True)
class RowPolicy:
    """The error policy of one read, checked once (``check_mode``) and applied to every row."""

    mode: str
    on_bad_row: OnBadRow | None

    def __post_init__(self) -> None:
        check_mode(self.mode, self.on_bad_row)

    def candles(
        self,
        spec: FileSpec,
        rows: Iterable[tuple[int, T]],
        parse: Callable[[T], Candle],
        payload: Callable[[T], str],
    ) -> Iterator[Candle]:
        """``parse`` of each (line number, row); a row it refuses (RowError) raises ImportFileError
        naming the line (strict) or goes to ``on_bad_row`` with ``payload(row)`` (dead-letter)."""
        for line, row in rows:
            try:
                yield parse(row)
            except RowError as exc:
                if self.mode == "strict" or self.on_bad_row is None:
                    raise ImportFileError(spec.path, str(exc), line) from exc
                self.on_bad_row(BadRow(path=spec.path, line=line, reason=str(exc), payload=payload(row)))


def open_import(
    path: str | Path,
    spec_of: Callable[[str | Path, str | None, str | None], FileSpec],
    symbol: str | None,
    interval: str | None,
    mode: str,
    on_bad_row: OnBadRow | None,
) -> tuple[FileSpec, RowPolicy]:
    """What every reader does first: check the policy, then the file, then what it holds."""
    policy = RowPolicy(mode, on_bad_row)
    require_file(path)
    return spec_of(path, symbol, interval), policy


def text_lines(data: bytes) -> Iterator[tuple[int, str]]:
    """The non-blank lines of a text file with their 1-based numbers (``\\r\\n`` or ``\\n``)."""
    text = data.decode("utf-8", errors="replace")
    for index, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if line.strip():
            yield index, line


def to_ms(ts: int) -> int:
    """A Binance timestamp in ms, whether it was given in ms or µs."""
    return ts // 1000 if ts >= MICROS_THRESHOLD else ts


def parse_int(text: str, field: str) -> int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        f = float(text)
    except ValueError:
        raise RowError(f"{field}={text!r} is not an integer") from None
    if not f.is_integer():
        raise RowError(f"{field}={text!r} is not an integer")
    return int(f)


def parse_float(text: str | float | int, field: str) -> float:
    if isinstance(text, bool):
        raise RowError(f"{field}={text!r} is not a number")
    try:
        f = float(text)
    except (TypeError, ValueError):
        raise RowError(f"{field}={text!r} is not a number") from None
    if not math.isfinite(f) or f < 0:
        raise RowError(f"{field}={text!r} is not a finite non-negative number")
    return f


def make_candle(
    spec: FileSpec,
    *,
    open_time: int,
    close_time: int | None,
    o: float,
    h: float,
    low: float,
    c: float,
    v: float,
    quote_volume: float | None = None,
    trades: int | None = None,
    taker_buy_base: float | None = None,
    taker_buy_quote: float | None = None,
) -> Candle:
    """A closed import candle, checked against the raw-topic contract; RowError says why not."""
    if bucket_start(open_time, spec.interval) != open_time:
        raise RowError(f"open time {open_time} is not aligned to {spec.interval}")
    expected_close = open_time + spec.step_ms - 1
    if close_time is None:
        close_time = expected_close
    elif close_time != expected_close:
        raise RowError(f"close time {close_time} != open time {open_time} + {spec.interval} - 1 ms")
    if not (low <= o <= h and low <= c <= h):
        raise RowError(f"prices out of order: o={o!r} h={h!r} l={low!r} c={c!r}")
    if trades is not None and trades < 0:
        raise RowError(f"trade count {trades} is negative")
    return Candle(
        symbol=spec.symbol,
        interval=spec.interval,
        open_time=open_time,
        close_time=close_time,
        open=o,
        high=h,
        low=low,
        close=c,
        volume=v,
        quote_volume=quote_volume,
        trades=trades,
        taker_buy_base=taker_buy_base,
        taker_buy_quote=taker_buy_quote,
        is_closed=True,
        source="import",
        event_time=close_time,
    )


# --- the columnar form, for bulk loads -----------------------------------------------------

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


def ms_column(ts: I64) -> I64:
    """``to_ms`` over a column."""
    out: I64 = np.where(ts >= MICROS_THRESHOLD, ts // 1000, ts)
    return out


def columns_valid(
    spec: FileSpec,
    *,
    open_time: I64,
    close_time: I64,
    o: F64,
    h: F64,
    low: F64,
    c: F64,
    others: tuple[F64, ...] = (),
    trades: I64 | None = None,
) -> bool:
    """``make_candle``'s checks over whole columns: True when every row passes.

    ``others`` are further volumes that must be finite and non-negative (volume, quote and
    taker volumes). A False sends the caller to its row reader, which names the row.
    """
    ok = np.ones(open_time.shape[0], dtype=np.bool_)
    for arr in (o, h, low, c, *others):
        ok &= np.isfinite(arr) & (arr >= 0)
    ok &= (low <= o) & (o <= h) & (low <= c) & (c <= h)
    if trades is not None:
        ok &= trades >= 0
    offset = interval_offset_ms(spec.interval)
    ok &= (open_time - offset) % spec.step_ms == 0
    ok &= close_time == open_time + spec.step_ms - 1
    return bool(ok.all())


@dataclass(frozen=True)
class CandleBlock:
    """Closed candles of one (symbol, interval) as columns; the bulk loader's input.

    Times are int64 ms. Nullable columns use NaN (floats) and -1 (trades) for "unknown": a valid
    row is never NaN or negative, so the sentinels cannot collide with data.
    """

    symbol: str
    interval: str
    open_time: I64
    close_time: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    quote_volume: F64
    trades: I64
    taker_buy_base: F64
    taker_buy_quote: F64

    def __len__(self) -> int:
        return int(self.open_time.shape[0])

    @classmethod
    def from_candles(cls, symbol: str, interval: str, candles: Sequence[Candle]) -> CandleBlock:
        """Columns of ``candles`` (all of ``symbol``/``interval``)."""
        for c in candles:
            if c.symbol != symbol or c.interval != interval:
                raise ValueError(f"candle {c.key} in a block of {symbol}:{interval}")
        nan = math.nan

        def floats(values: list[float | None]) -> F64:
            return np.array([nan if x is None else x for x in values], dtype=np.float64)

        return cls(
            symbol=symbol,
            interval=interval,
            open_time=np.array([c.open_time for c in candles], dtype=np.int64),
            close_time=np.array([c.close_time for c in candles], dtype=np.int64),
            open=np.array([c.open for c in candles], dtype=np.float64),
            high=np.array([c.high for c in candles], dtype=np.float64),
            low=np.array([c.low for c in candles], dtype=np.float64),
            close=np.array([c.close for c in candles], dtype=np.float64),
            volume=np.array([c.volume for c in candles], dtype=np.float64),
            quote_volume=floats([c.quote_volume for c in candles]),
            trades=np.array([-1 if c.trades is None else c.trades for c in candles], dtype=np.int64),
            taker_buy_base=floats([c.taker_buy_base for c in candles]),
            taker_buy_quote=floats([c.taker_buy_quote for c in candles]),
        )

    def slice(self, start: int, stop: int) -> CandleBlock:
        return CandleBlock(
            symbol=self.symbol,
            interval=self.interval,
            open_time=self.open_time[start:stop],
            close_time=self.close_time[start:stop],
            open=self.open[start:stop],
            high=self.high[start:stop],
            low=self.low[start:stop],
            close=self.close[start:stop],
            volume=self.volume[start:stop],
            quote_volume=self.quote_volume[start:stop],
            trades=self.trades[start:stop],
            taker_buy_base=self.taker_buy_base[start:stop],
            taker_buy_quote=self.taker_buy_quote[start:stop],
        )

    def take(self, mask: NDArray[np.bool_]) -> CandleBlock:
        """The rows where ``mask`` is True."""
        return CandleBlock(
            symbol=self.symbol,
            interval=self.interval,
            open_time=self.open_time[mask],
            close_time=self.close_time[mask],
            open=self.open[mask],
            high=self.high[mask],
            low=self.low[mask],
            close=self.close[mask],
            volume=self.volume[mask],
            quote_volume=self.quote_volume[mask],
            trades=self.trades[mask],
            taker_buy_base=self.taker_buy_base[mask],
            taker_buy_quote=self.taker_buy_quote[mask],
        )

    def candles(self) -> list[Candle]:
        """Back to candle objects (tests and small blocks; the bulk path never needs this)."""
        out = []
        for i in range(len(self)):
            q, n = float(self.quote_volume[i]), int(self.trades[i])
            bb, bq = float(self.taker_buy_base[i]), float(self.taker_buy_quote[i])
            ct = int(self.close_time[i])
            out.append(
                Candle(
                    symbol=self.symbol,
                    interval=self.interval,
                    open_time=int(self.open_time[i]),
                    close_time=ct,
                    open=float(self.open[i]),
                    high=float(self.high[i]),
                    low=float(self.low[i]),
                    close=float(self.close[i]),
                    volume=float(self.volume[i]),
                    quote_volume=None if math.isnan(q) else q,
                    trades=None if n < 0 else n,
                    taker_buy_base=None if math.isnan(bb) else bb,
                    taker_buy_quote=None if math.isnan(bq) else bq,
                    is_closed=True,
                    source="import",
                    event_time=ct,
                )
            )
        return out
