"""data.binance.vision kline files: ``SYMBOL-INTERVAL-YYYY-MM[-DD].zip`` or ``.csv``.

A file is one CSV (alone in its zip) of 12 columns: open_time, open, high, low, close, volume,
close_time, quote_volume, count, taker_buy_volume, taker_buy_quote_volume, ignore. Newer files
carry a header line (``open_time,...``), older ones none. Spot files from 2025-01-01 give times
in microseconds; the unit is decided per value (``common.to_ms``).

Two readers with one meaning:

- ``read_vision`` yields one ``Candle`` per row (replay, small files, exact error positions);
- ``read_vision_block`` parses the columns with pyarrow and checks them with numpy, for the
  bulk loader. When anything about the file is irregular (a parse error, a null, a row that
  breaks the contract) it falls back to the row reader, so errors and dead letters name the
  same file and line either way, and the good rows are the same.
"""

from __future__ import annotations

import re
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]
from isal import isal_zlib

from schemas.klines import Candle
from streams.importers.common import (
    MICROS_THRESHOLD,
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
    parse_int,
    text_lines,
)
from streams.importers.common import open_import as _open

COLUMNS: tuple[str, ...] = (
    "open_time", "open", "high", "low", "close", "volume", "close_time",
    "quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore",
)  # fmt: skip
_INT_COLUMNS = frozenset({"open_time", "close_time", "count"})
_NAME = re.compile(
    r"^(?P<symbol>[A-Z0-9]+)-(?P<interval>\d+[smhdwM])-(?P<date>\d{4}-\d{2}(?:-\d{2})?)\.(?:zip|csv)$"
)
_ZIP_MAGIC = b"PK\x03\x04"
#: zip local file header: signature .. file name length, extra field length (APPNOTE 4.3.7)
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")


def parse_vision_name(path: str | Path) -> tuple[str, str] | None:
    """(symbol, interval) from a Vision file name like ``LINKUSDT-1m-2026-02.zip``, else None."""
    m = _NAME.match(Path(path).name)
    return (m.group("symbol"), m.group("interval")) if m else None


def vision_spec(path: str | Path, symbol: str | None = None, interval: str | None = None) -> FileSpec:
    named = parse_vision_name(path)
    return file_spec(path, symbol or (named[0] if named else None), interval or (named[1] if named else None))


def read_csv_bytes(path: str | Path) -> bytes:
    """The CSV bytes of a Vision file: the one member of a zip, or the file itself."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(4)
            f.seek(0)
            if head != _ZIP_MAGIC:
                if p.suffix.lower() == ".zip":
                    raise ImportFileError(p, "not a zip file")
                return f.read()
            with zipfile.ZipFile(f) as zf:
                members = [i for i in zf.infolist() if not i.is_dir()]
                if len(members) != 1:
                    names = ", ".join(i.filename for i in members) or "nothing"
                    raise ImportFileError(p, f"expected one CSV in the zip, found {names}")
                return _inflate(p, f, members[0]) or zf.read(members[0])
    except FileNotFoundError as exc:
        raise ImportFileError(p, "no such file") from exc
    except IsADirectoryError as exc:
        raise ImportFileError(p, "is a directory, not a file") from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise ImportFileError(p, f"not a readable zip file: {exc}") from exc
    except OSError as exc:
        raise ImportFileError(p, f"cannot read: {exc.strerror or exc}") from exc


def _inflate(path: Path, f: BinaryIO, info: zipfile.ZipInfo) -> bytes | None:
    """A deflated, unencrypted member inflated with ISA-L (~3x zlib); None: let zipfile do it."""
    if info.compress_type != zipfile.ZIP_DEFLATED or info.flag_bits & 0x1:
        return None
    f.seek(info.header_offset)
    header = f.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != _ZIP_MAGIC:
        return None
    name_len, extra_len = _LOCAL_HEADER.unpack(header)[-2:]
    f.seek(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
    try:
        data = isal_zlib.decompress(f.read(info.compress_size), wbits=-15)
    except Exception as exc:  # isal_zlib.error (its stub types it as an instance, not a class)
        raise ImportFileError(path, f"corrupt zip member {info.filename}: {exc}") from exc
    if len(data) != info.file_size or isal_zlib.crc32(data) != info.CRC:
        raise ImportFileError(path, f"corrupt zip member {info.filename}: size or CRC mismatch")
    return data


def _is_header(line: str) -> bool:
    first = line.lstrip("\ufeff").split(",", 1)[0].strip().strip('"').lower()
    return first == "open_time"


def parse_vision_row(spec: FileSpec, line: str) -> Candle:
    """One CSV line as a candle; RowError says what is wrong with it."""
    fields = line.split(",")
    if len(fields) != len(COLUMNS):
        raise RowError(f"expected {len(COLUMNS)} columns, found {len(fields)}")
    open_time = parse_int(fields[0], "open_time")
    close_time = parse_int(fields[6], "close_time")
    return make_candle(
        spec,
        open_time=open_time // 1000 if open_time >= MICROS_THRESHOLD else open_time,
        close_time=close_time // 1000 if close_time >= MICROS_THRESHOLD else close_time,
        o=parse_float(fields[1], "open"),
        h=parse_float(fields[2], "high"),
        low=parse_float(fields[3], "low"),
        c=parse_float(fields[4], "close"),
        v=parse_float(fields[5], "volume"),
        quote_volume=parse_float(fields[7], "quote_volume"),
        trades=parse_int(fields[8], "count"),
        taker_buy_base=parse_float(fields[9], "taker_buy_volume"),
        taker_buy_quote=parse_float(fields[10], "taker_buy_quote_volume"),
    )


def _rows(spec: FileSpec, data: bytes, policy: RowPolicy) -> Iterator[Candle]:
    lines = ((n, line) for n, line in text_lines(data) if not (n == 1 and _is_header(line)))
    return policy.candles(spec, lines, lambda line: parse_vision_row(spec, line), str)


def read_vision(
    path: str | Path,
    *,
    symbol: str | None = None,
    interval: str | None = None,
    mode: str = "strict",
    on_bad_row: OnBadRow | None = None,
) -> Iterator[Candle]:
    """Yield the candles of a Vision zip or CSV, row by row, in file order.

    ``symbol``/``interval`` override the file name. Raises ImportFileError for an unreadable
    file, and in strict mode for the first bad row (naming its line).
    """
    spec, policy = _open(path, vision_spec, symbol, interval, mode, on_bad_row)
    yield from _rows(spec, read_csv_bytes(path), policy)


def read_vision_block(
    path: str | Path,
    *,
    symbol: str | None = None,
    interval: str | None = None,
    mode: str = "strict",
    on_bad_row: OnBadRow | None = None,
) -> CandleBlock:
    """All candles of a Vision file as columns: pyarrow fast path, row reader on any doubt."""
    spec, policy = _open(path, vision_spec, symbol, interval, mode, on_bad_row)
    data = read_csv_bytes(path)
    block = _fast_block(spec, data)
    if block is not None:
        return block
    candles = list(_rows(spec, data, policy))
    return CandleBlock.from_candles(spec.symbol, spec.interval, candles)


_READ_COLUMNS = [c for c in COLUMNS if c != "ignore"]
_CONVERT = pacsv.ConvertOptions(
    column_types={c: pa.int64() if c in _INT_COLUMNS else pa.float64() for c in _READ_COLUMNS},
    include_columns=_READ_COLUMNS,
    strings_can_be_null=False,
    quoted_strings_can_be_null=False,
)
# the row reader does not unquote, so neither does the fast path: both refuse the same rows
_PARSE = pacsv.ParseOptions(quote_char=False)


def _fast_block(spec: FileSpec, data: bytes) -> CandleBlock | None:
    """The file as columns when every row is clean; None sends the caller to the row reader."""
    first_line = data[:4096].split(b"\n", 1)[0].decode("utf-8", errors="replace")
    skip = 1 if _is_header(first_line) else 0
    try:
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(column_names=list(COLUMNS), skip_rows=skip),
            parse_options=_PARSE,
            convert_options=_CONVERT,
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    if any(col.null_count for col in table.columns):
        return None

    def column(name: str) -> np.ndarray:
        arr: np.ndarray = table.column(name).to_numpy()
        return arr

    ot, ct = ms_column(column("open_time")), ms_column(column("close_time"))
    o, h, low, c, v = (column(n) for n in ("open", "high", "low", "close", "volume"))
    q, bb, bq = column("quote_volume"), column("taker_buy_volume"), column("taker_buy_quote_volume")
    trades = column("count")
    if not columns_valid(
        spec, open_time=ot, close_time=ct, o=o, h=h, low=low, c=c, others=(v, q, bb, bq), trades=trades
    ):
        return None
    return CandleBlock(
        symbol=spec.symbol,
        interval=spec.interval,
        open_time=ot.astype(np.int64, copy=False),
        close_time=ct.astype(np.int64, copy=False),
        open=o,
        high=h,
        low=low,
        close=c,
        volume=v,
        quote_volume=q,
        trades=trades.astype(np.int64, copy=False),
        taker_buy_base=bb,
        taker_buy_quote=bq,
    )
