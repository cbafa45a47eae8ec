"""Test helpers: real data as candles, a dict-backed state and an in-memory durable record."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from schemas.klines import Candle
from topologies.candle_logic import Known
from topologies.feature_logic import MemoryState

DATA = Path(__file__).resolve().parents[2] / "data"
XRP_DUMP = DATA / "freqtrade" / "binance" / "XRP_USDT-1m.json"
VISION = DATA / "binance-vision" / "futures-um" / "1m"


@cache
def xrp_candles() -> tuple[Candle, ...]:
    rows = json.loads(XRP_DUMP.read_text())
    return tuple(
        Candle("XRPUSDT", "1m", int(r[0]), int(r[0]) + 59_999, float(r[1]), float(r[2]), float(r[3]),
               float(r[4]), float(r[5]), None, None, None, None, True, "import",
               event_time=int(r[0]) + 59_999)
        for r in rows
    )  # fmt: skip


@cache
def vision_candles(symbol: str = "LINKUSDT") -> tuple[Candle, ...]:
    path = VISION / f"{symbol}-1m-2026-02.zip"
    with zipfile.ZipFile(path) as z:
        text = z.read(z.namelist()[0]).decode()
    out = []
    for row in csv.reader(io.StringIO(text)):
        if not row[0].isdigit():
            continue
        t = int(row[0])
        out.append(Candle(symbol, "1m", t, int(row[6]), float(row[1]), float(row[2]), float(row[3]),
                          float(row[4]), float(row[5]), float(row[7]), int(row[8]), float(row[9]),
                          float(row[10]), True, "import", event_time=int(row[6])))  # fmt: skip
    return tuple(out)


class DictState:
    """Quix State stand-in for pure tests: one per stream key."""

    def __init__(self) -> None:
        self.d: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        v = self.d.get(key, default)
        return orjson.loads(orjson.dumps(v)) if v is not None else v  # state round-trips values

    def set(self, key: str, value: Any) -> None:
        self.d[key] = orjson.loads(orjson.dumps(value))

    def delete(self, key: str) -> None:
        self.d.pop(key, None)


#: a state without serialisation, for long runs (DictState round-trips through JSON)
PlainState = MemoryState


class NoRecord:
    """An empty durable record."""

    def seed(self, symbol: str, interval: str) -> dict[str, Any]:
        return {"first_closed": None, "last_closed": None, "seq": 0, "segments": []}

    def closed_candles(self, symbol: str, interval: str, open_times: list[int]) -> dict[int, Known]:
        return {}

    def bars_between(self, symbol: str, start_ms: int, end_ms: int) -> dict[int, list[Any]]:
        return {}

    def last_stored(self, symbol: str) -> int:
        return -1
