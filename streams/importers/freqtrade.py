"""freqtrade / ccxt OHLCV dumps: ``PAIR-INTERVAL[-TYPE].json[.gz]|csv[.gz]|feather|parquet``.

- JSON (freqtrade's ``jsondatahandler``, ccxt ``fetch_ohlcv``): ``[[ms, o, h, l, c, v], ...]``;
- CSV: ``date,open,high,low,close,volume`` (header optional), ``date`` in ms or ISO 8601;
- feather / parquet (freqtrade's binary data formats): columns ``date`` (timestamp), open,
  high, low, close, volume.

The name gives symbol and interval: ``XRP_USDT-1m.json`` is XRPUSDT 1m, futures dumps
``BTC_USDT_USDT-1h-futures.feather`` are BTCUSDT 1h. Dumps of mark/index/funding candles are
refused: they are not trade candles. These formats have no quote volume, trade count or taker
volumes, so those fields are ``None``; close_time is ``open_time + interval - 1 ms``.

Positions: CSV errors name the line; JSON, feather and parquet name the 1-based row (freqtrade
writes its JSON array on one line, so the row is the only useful position).
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa  # type: ignore[import-untyped]
from pyarrow import feather, parquet

from schemas.klines import Candle
from streams.importers.common import (
    CandleBlock,
    FileSpec,
    ImportFileError,
    OnBadRow,
    RowError,
    RowPolicy,
    columns_valid,
    file_spec,
    make_candle,
    ms_column,
    parse_float,
    text_lines,
    to_ms,
)
from streams.importers.common import open_import as _open

_NAME = re.compile(
    r"^(?P<pair>[A-Za-z0-9]+(?:_[A-Za-z0-9]+){1,2})-(?P<interval>\d+[smhdwM])"
    r"(?:-(?P<ctype>[A-Za-z_]+))?\.(?P<ext>json|json\.gz|csv|csv\.gz|feather|parquet)$"
)
_TRADE_CANDLES = frozenset({"spot", "futures"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_CSV_FIELDS = ("date", "open", "high", "low", "close", "volume")


def parse_freqtrade_name(path: str | Path) -> tuple[str, str, str | None] | None:
    """(symbol, interval, candle type) from ``XRP_USDT-1m.json``-style names, else None."""
    m = _NAME.match(Path(path).name)
    if not m:
        return None
    parts = m.group("pair").upper().split("_")
    return parts[0] + parts[1], m.group("interval"), m.group("ctype")


def freqtrade_spec(path: str | Path, symbol: str | None = None, interval: str | None = None) -> FileSpec:
    named = parse_freqtrade_name(path)
    if named and named[2] is not None and named[2] not in _TRADE_CANDLES:
        raise ImportFileError(path, f"holds {named[2]} candles, not trade candles")
    return file_spec(path, symbol or (named[0] if named else None), interval or (named[1] if named else None))


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ImportFileError(path, "no such file") from exc
    except IsADirectoryError as exc:
        raise ImportFileError(path, "is a directory, not a file") from exc
    except OSError as exc:
        raise ImportFileError(path, f"cannot read: {exc.strerror or exc}") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ImportFileError(path, f"not a readable gzip file: {exc}") from exc
    return raw


def _open_time(value: Any, field: str = "date") -> int:
    if isinstance(value, bool):
        raise RowError(f"{field}={value!r} is not a timestamp")
    if isinstance(value, int):
        return to_ms(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise RowError(f"{field}={value!r} is not a whole number of ms")
        return to_ms(int(value))
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return to_ms(int(text))
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise RowError(f"{field}={value!r} is neither ms nor an ISO 8601 time") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return (dt - _EPOCH) // _MS
    raise RowError(f"{field}={value!r} is not a timestamp")


def _ohlcv(spec: FileSpec, values: list[Any]) -> Candle:
    if len(values) < 6:
        raise RowError(f"expected [date, open, high, low, close, volume], found {len(values)} fields")
    return make_candle(
        spec,
        open_time=_open_time(values[0]),
        close_time=None,
        o=parse_float(values[1], "open"),
        h=parse_float(values[2], "high"),
        low=parse_float(values[3], "low"),
        c=parse_float(values[4], "close"),
        v=parse_float(values[5], "volume"),
    )


def _load_json(path: Path) -> list[Any]:
    try:
        rows = orjson.loads(_read_bytes(path))
    except orjson.JSONDecodeError as exc:
        raise ImportFileError(path, f"not valid JSON: {exc}") from exc
    if not isinstance(rows, list):
        raise ImportFileError(path, "expected a JSON array of [ms, open, high, low, close, volume] rows")
    return rows


def _json_rows(spec: FileSpec, rows: list[Any], policy: RowPolicy) -> Iterator[Candle]:
    def parse(row: Any) -> Candle:
        if not isinstance(row, list):
            raise RowError(f"expected [date, open, high, low, close, volume], found {type(row).__name__}")
        return _ohlcv(spec, row)

    return policy.candles(spec, enumerate(rows, start=1), parse, lambda row: orjson.dumps(row).decode())


def _fields(line: str) -> list[str]:
    return [f.strip().strip('"') for f in line.split(",")]


def _csv_rows(spec: FileSpec, path: Path, policy: RowPolicy) -> Iterator[Candle]:
    lines = list(text_lines(_read_bytes(path)))
    order = list(range(6))
    if lines and lines[0][0] == 1:
        fields = _fields(lines[0][1])
        if fields[0].lstrip("\ufeff").lower() in ("date", "timestamp", "time"):
            names = [f.lstrip("\ufeff").lower() for f in fields]
            names[0] = "date"
            missing = [n for n in _CSV_FIELDS if n not in names]
            if missing:
                raise ImportFileError(path, f"header lacks {', '.join(missing)}", 1)
            order = [names.index(n) for n in _CSV_FIELDS]
            lines = lines[1:]

    def parse(line: str) -> Candle:
        fields = _fields(line)
        if len(fields) <= max(order):
            raise RowError(f"expected {max(order) + 1} columns, found {len(fields)}")
        return _ohlcv(spec, [fields[i] for i in order])

    return policy.candles(spec, lines, parse, str)


def _table_rows(spec: FileSpec, path: Path, kind: str, policy: RowPolicy) -> Iterator[Candle]:
    try:
        table = feather.read_table(path) if kind == "feather" else parquet.read_table(path)
    except FileNotFoundError as exc:
        raise ImportFileError(path, "no such file") from exc
    except (OSError, pa.ArrowException) as exc:
        raise ImportFileError(path, f"not a readable {kind} file: {exc}") from exc
    missing = [n for n in _CSV_FIELDS if n not in table.column_names]
    if missing:
        raise ImportFileError(path, f"{kind} file lacks columns {', '.join(missing)}")
    date = table.column("date")
    if pa.types.is_timestamp(date.type):
        date = date.cast(pa.timestamp("ms", tz=date.type.tz)).cast(pa.int64())
    columns = [date.to_pylist(), *(table.column(n).to_pylist() for n in _CSV_FIELDS[1:])]

    def parse(row: tuple[Any, ...]) -> Candle:
        if any(v is None for v in row):
            raise RowError("a field is null")
        return _ohlcv(spec, list(row))

    yield from policy.candles(spec, enumerate(zip(*columns, strict=True), start=1), parse, repr)


def read_freqtrade(
    path: str | Path,
    *,
    symbol: str | None = None,
    interval: str | None = None,
    mode: str = "strict",
    on_bad_row: OnBadRow | None = None,
) -> Iterator[Candle]:
    """Yield the candles of a freqtrade/ccxt dump in file order.

    ``symbol``/``interval`` override the file name. Raises ImportFileError for an unreadable
    file or unknown format, and in strict mode for the first bad row.
    """
    spec, policy = _open(path, freqtrade_spec, symbol, interval, mode, on_bad_row)
    p = Path(path)
    name = p.name.lower()
    if name.endswith((".json", ".json.gz")):
        yield from _json_rows(spec, _load_json(p), policy)
    elif name.endswith((".csv", ".csv.gz")):
        yield from _csv_rows(spec, p, policy)
    elif name.endswith(".feather"):
        yield from _table_rows(spec, p, "feather", policy)
    elif name.endswith(".parquet"):
        yield from _table_rows(spec, p, "parquet", policy)
    else:
        raise ImportFileError(p, "unknown format: expected .json, .json.gz, .csv, .feather or .parquet")


def _json_block(spec: FileSpec, rows: list[Any]) -> CandleBlock | None:
    """The rows as columns when every one is clean (numbers only); None: use the row reader."""
    if not rows:
        return None
    try:
        table = np.array(rows, dtype=np.float64)
    except (ValueError, TypeError):
        return None
    if table.ndim != 2 or table.shape[1] < 6 or not np.isfinite(table[:, 0]).all():
        return None
    ts = table[:, 0]
    if not (ts == np.floor(ts)).all() or np.abs(ts).max() >= 2**53:
        return None
    open_time = ms_column(ts.astype(np.int64))
    close_time = open_time + spec.step_ms - 1
    o, h, low, c, v = (np.ascontiguousarray(table[:, i]) for i in range(1, 6))
    if not columns_valid(
        spec, open_time=open_time, close_time=close_time, o=o, h=h, low=low, c=c, others=(v,)
    ):
        return None
    n = len(rows)
    nan = np.full(n, np.nan)
    return CandleBlock(
        symbol=spec.symbol,
        interval=spec.interval,
        open_time=open_time,
        close_time=close_time,
        open=o,
        high=h,
        low=low,
        close=c,
        volume=v,
        quote_volume=nan,
        trades=np.full(n, -1, dtype=np.int64),
        taker_buy_base=nan.copy(),
        taker_buy_quote=nan.copy(),
    )


def read_freqtrade_block(
    path: str | Path,
    *,
    symbol: str | None = None,
    interval: str | None = None,
    mode: str = "strict",
    on_bad_row: OnBadRow | None = None,
) -> CandleBlock:
    """All candles of a dump as columns: JSON dumps of clean numbers take a numpy fast path."""
    spec, policy = _open(path, freqtrade_spec, symbol, interval, mode, on_bad_row)
    p = Path(path)
    if p.name.lower().endswith((".json", ".json.gz")):
        rows = _load_json(p)
        block = _json_block(spec, rows)
        if block is not None:
            return block
        candles = list(_json_rows(spec, rows, policy))
    else:
        candles = list(read_freqtrade(p, symbol=symbol, interval=interval, mode=mode, on_bad_row=on_bad_row))
    return CandleBlock.from_candles(spec.symbol, spec.interval, candles)
