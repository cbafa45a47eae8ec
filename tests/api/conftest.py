"""Fixtures of the API tests: real candles through the real topology into chDB, then the app.

The session dataset is built once (the topology costs seconds per run): 360 real LINKUSDT 1m
candles (Binance Vision, Feb 2026) with two ranges dropped, through the candle topology (with
its features dataframe) into a fresh chDB database; then a second run (fresh raw topic, same
database) brings two of the dropped candles late (a gap repaired), one revised candle (a
repair) and one candle in progress. Nothing is written to ClickHouse except by the topology.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.main import create_app
from ohlcv.infra.clickhouse import make_client, migrate
from ohlcv.settings import Settings
from schemas.klines import Candle
from tests.topologies.helpers import vision_candles
from tests.topologies.pipeline import produce, run_topology, unique_topics

API_KEY = "test-key"
AUTH = {"X-API-Key": API_KEY}
SYMBOL = "LINKUSDT"
MIN = 60_000

N_CANDLES = 360
REVISED_AT = 50  #: index of the candle revised in the second run
LATE = (100, 101)  #: dropped in the first run, arrive late in the second (gap repaired)
OPEN_GAP = tuple(range(200, 210))  #: never produced (gap stays open)


def api_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "symbols": [SYMBOL],
        "intervals": ["1m"],
        "resample_intervals": ["5m"],
        "api_key": API_KEY,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass(frozen=True)
class Dataset:
    url: str
    db: str
    broker: str
    settings: Settings
    closed: tuple[Candle, ...]  #: every closed 1m candle stored, ascending
    revised: Candle  #: the repair (revision 1) as produced
    original: Candle  #: the same slot as first stored
    partial: Candle  #: the candle in progress after the last closed one
    second_run_started_ms: int
    events_topic: str  #: the events topic of the second run

    def app(self, settings: Settings | None = None, **kwargs: Any) -> FastAPI:
        return create_app(
            settings or self.settings, broker_address=self.broker, clickhouse_client_factory=self.client,
            events_topic=self.events_topic, **kwargs,
        )  # fmt: skip

    def client(self) -> Client:
        return make_client(self.url, self.db)

    def stored(self) -> list[Candle]:
        """The closed 1m candles as stored: the revised one in place of its original."""
        return [self.revised if c.open_time == self.revised.open_time else c for c in self.closed]

    @property
    def repaired(self) -> set[int]:
        """Open times of the bars repaired or late-filled in the second run."""
        return {self.revised.open_time, *(self.closed[0].open_time + i * MIN for i in LATE)}


def revise(c: Candle) -> Candle:
    close = round(c.close * 1.01, 4)
    return dataclasses.replace(c, close=close, high=max(c.high, close), source="rest")


@pytest.fixture(scope="session")
def dataset(broker: str, chdb_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dataset]:
    url, db = f"chdb://{chdb_path}", f"t_api_{uuid.uuid4().hex[:10]}"
    ch = make_client(url, db)
    migrate(ch)
    state = tmp_path_factory.mktemp("api-state")
    base = vision_candles(SYMBOL)[: N_CANDLES + 1]
    first = [c for i, c in enumerate(base[:N_CANDLES]) if i not in LATE and i not in OPEN_GAP]
    t1 = unique_topics(broker, f"t{uuid.uuid4().hex[:8]}.")
    produce(broker, t1["raw"], first)
    run_topology(broker, t1, url, db, state / "1", idle_timeout_s=3, resample=("5m",), features=True)
    second_started = int(time.time() * 1000)
    revised = revise(base[REVISED_AT])
    partial = dataclasses.replace(base[N_CANDLES], is_closed=False, source="ws")
    t2 = unique_topics(broker, f"t{uuid.uuid4().hex[:8]}.")
    produce(broker, t2["raw"], [base[LATE[0]], base[LATE[1]], revised, partial])
    run_topology(broker, t2, url, db, state / "2", idle_timeout_s=3, resample=("5m",), features=True)
    closed = tuple(c for i, c in enumerate(base[:N_CANDLES]) if i not in OPEN_GAP)
    yield Dataset(
        url=url, db=db, broker=broker, settings=api_settings(), closed=closed, revised=revised,
        original=base[REVISED_AT], partial=partial, second_run_started_ms=second_started,
        events_topic=t2["events"],
    )  # fmt: skip
    ch.command(f"DROP DATABASE IF EXISTS `{db}`")
    ch.close()


@pytest.fixture(scope="session")
def client(dataset: Dataset) -> Iterator[TestClient]:
    """The app on the dataset, through its lifespan; no default headers (send ``AUTH``)."""
    with TestClient(dataset.app()) as c:
        yield c


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"
