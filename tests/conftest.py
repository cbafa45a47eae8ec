"""Shared fixtures: the real embedded broker (session) and real chDB (one database per test).

Nothing here skips: if the broker or chDB cannot start, the tests error, because a missing
engine is a broken setup, not a pass.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from ohlcv.infra.broker import EmbeddedBroker
from ohlcv.infra.clickhouse import make_client, migrate

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Address of a real Tansu broker started for the whole test session."""
    b = EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "broker.log")
    b.start()
    yield b.address
    b.stop()


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The one chDB data path of this test process (chDB allows one path per process)."""
    return str(tmp_path_factory.mktemp("chdb"))


@pytest.fixture
def ch_url(chdb_path: str) -> str:
    return f"chdb://{chdb_path}"


@pytest.fixture
def ch_db() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def ch(ch_url: str, ch_db: str) -> Iterator[Client]:
    """A client on a fresh database with every migration applied; dropped afterwards."""
    client = make_client(ch_url, ch_db)
    migrate(client)
    yield client
    client.command(f"DROP DATABASE IF EXISTS `{ch_db}`")
    client.close()


@pytest.fixture
def topic_prefix() -> str:
    """A unique prefix so tests sharing the session broker never see each other's records."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An environment with none of our settings set, and an empty working directory."""
    for key in list(os.environ):
        if key.split("_")[0] in {
            "SYMBOL",
            "SYMBOLS",
            "INTERVAL",
            "INTERVALS",
            "KAFKA",
            "CLICKHOUSE",
            "API",
            "DATA",
        }:
            monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def xrp_features(ch: Client) -> Client:
    """``ch`` holding the feature rows of the whole real XRP dump (as the features topology
    derives them, both real outages included), for training and scoring tests."""
    from sinks.features import write_features
    from tests.topologies.helpers import PlainState, xrp_candles
    from topologies.feature_logic import FeatureStream
    from topologies.news_features import NewsBook

    cs = xrp_candles()
    rows = []
    fs, state = FeatureStream(), PlainState()
    for at in range(0, len(cs), 1000):
        rows += fs.apply_many(cs[at : at + 1000], ["new"] * len(cs[at : at + 1000]), state)
    for r in rows:
        r["event_seq"], r["emitted_at"] = 0, 0
    NewsBook().annotate(rows)  # no news: the columns say so
    write_features(ch, rows)
    return ch
