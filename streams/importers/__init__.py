"""History importers: files of past candles read as ``Candle`` (source ``import``, closed).

``read_candles(path)`` picks the reader from the file: data.binance.vision kline files
(``vision``) or freqtrade/ccxt dumps (``freqtrade``). ``read_block(path)`` returns the same
candles as columns for the bulk loader (``sinks.clickhouse_bulk``). Readers never fill gaps and
never invent fields a format lacks. See ``common`` for the error policy (strict / dead-letter).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from schemas.klines import Candle
from streams.importers.common import (
    ERROR_MODES,
    BadRow,
    CandleBlock,
    ErrorMode,
    ImportFileError,
    OnBadRow,
    check_mode,
    require_file,
)
from streams.importers.freqtrade import parse_freqtrade_name, read_freqtrade, read_freqtrade_block
from streams.importers.vision import parse_vision_name, read_csv_bytes, read_vision, read_vision_block

__all__ = [
    "ERROR_MODES",
    "BadRow",
    "CandleBlock",
    "ErrorMode",
    "FileFormat",
    "ImportFileError",
    "OnBadRow",
    "detect_format",
    "guess_market",
    "read_block",
    "read_candles",
    "read_freqtrade",
    "read_freqtrade_block",
    "read_vision",
    "read_vision_block",
]

FileFormat = Literal["vision", "freqtrade"]

_FREQTRADE_SUFFIXES = (".json", ".json.gz", ".csv.gz", ".feather", ".parquet")


def detect_format(path: str | Path) -> FileFormat:
    """Which reader a file needs: by its name, else by its extension, else by its first line."""
    p = Path(path)
    require_file(p)
    if parse_vision_name(p):
        return "vision"
    if parse_freqtrade_name(p):
        return "freqtrade"
    name = p.name.lower()
    if name.endswith(".zip"):
        return "vision"
    if name.endswith(_FREQTRADE_SUFFIXES):
        return "freqtrade"
    if name.endswith(".csv"):
        first = read_csv_bytes(p).split(b"\n", 1)[0].decode("utf-8", errors="replace")
        columns = len(first.split(","))
        if columns == 12:
            return "vision"
        if columns == 6:
            return "freqtrade"
        raise ImportFileError(
            p, f"unknown CSV layout ({columns} columns): expected Vision (12) or freqtrade (6)"
        )
    raise ImportFileError(
        p, "unknown format: expected a Binance Vision .zip/.csv or a freqtrade .json/.csv/.feather dump"
    )


def guess_market(path: str | Path) -> str:
    """``usdm`` for USDT-M futures files (Vision ``futures/um``, freqtrade ``-futures``), else spot."""
    p = Path(path)
    parts = [x.lower() for x in p.parts]
    if "futures-um" in parts or ("futures", "um") in itertools.pairwise(parts):
        return "usdm"
    named = parse_freqtrade_name(p)
    if named and named[2] == "futures":
        return "usdm"
    return "spot"


def read_candles(
    path: str | Path,
    *,
    symbol: str | None = None,
    interval: str | None = None,
    mode: str = "strict",
    on_bad_row: OnBadRow | None = None,
) -> Iterator[Candle]:
    """Yield the candles of any supported history file, in file order (see the readers)."""
    check_mode(mode, on_bad_row)
    if detect_format(path) == "vision":
        return read_vision(path, symbol=symbol, interval=interval, mode=mode, on_bad_row=on_bad_row)
    return read_freqtrade(path, symbol=symbol, interval=interval, mode=mode, on_bad_row=on_bad_row)


def read_block(
    path: str | Path,
    *,
    symbol: str | None = None,
    interval: str | None = None,
    mode: str = "strict",
    on_bad_row: OnBadRow | None = None,
) -> CandleBlock:
    """All candles of a file as one columnar block (clean files take a vectorised fast path)."""
    check_mode(mode, on_bad_row)
    if detect_format(path) == "vision":
        return read_vision_block(path, symbol=symbol, interval=interval, mode=mode, on_bad_row=on_bad_row)
    return read_freqtrade_block(path, symbol=symbol, interval=interval, mode=mode, on_bad_row=on_bad_row)
