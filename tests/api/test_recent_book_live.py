"""Tier c: ``GET /recent`` from the live book, against a real uvicorn server, the real topology
and ClickHouse: once seeded, the book answers (``X-Recent-Source: book``), and after a live
market with in-progress updates, a late batch and a revision, it answers exactly what
``ohlcv_candles FINAL`` holds."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from clickhouse_connect.driver.client import Client

from api.main import create_app
from api.queries import SQL_RECENT, candle_dict
from ohlcv.infra.clickhouse import make_client
from tests.api.conftest import AUTH, SYMBOL, api_settings
from tests.api.harness import ApiServer, PacedProducer
from tests.topologies.helpers import vision_candles
from tests.topologies.pipeline import produce, run_topology, unique_topics

pytestmark = pytest.mark.broker


def recent(server: ApiServer, limit: int, include_open: bool) -> tuple[str, list[dict[str, Any]]]:
    r = httpx.get(
        f"{server.http_url}/api/ohlcv/recent",
        params={
            "symbol": SYMBOL,
            "interval": "1m",
            "limit": limit,
            "include_open": str(include_open).lower(),
        },
        headers=AUTH,
        timeout=10,
    )
    r.raise_for_status()
    return r.headers["X-Recent-Source"], r.json()["candles"]


def stored(ch: Client, limit: int, include_open: bool) -> list[dict[str, Any]]:
    rows = ch.query(
        SQL_RECENT, parameters={"s": SYMBOL, "i": "1m", "include_open": include_open, "n": limit}
    ).result_rows
    return [candle_dict(r) for r in reversed(rows)]


def test_recent_is_served_from_the_live_book_and_equals_the_table(
    broker: str, ch: Client, ch_url: str, ch_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    topics = unique_topics(broker, topic_prefix)
    base = vision_candles(SYMBOL)[3000:3400]
    warm, live = base[:100], [c for i, c in enumerate(base[100:]) if not 50 <= i < 60]
    late = base[150:160]  # the ten minutes the live market lost, repaired later as one batch
    group, state = f"g-{uuid.uuid4().hex[:8]}", tmp_path / "state"
    produce(broker, topics["raw"], warm)
    run_topology(broker, topics, ch_url, ch_db, state, idle_timeout_s=2, resample=(), group=group)
    app = create_app(
        api_settings(), broker_address=broker, clickhouse_client_factory=lambda: make_client(ch_url, ch_db),
        events_topic=topics["events"],
    )  # fmt: skip
    with ApiServer(app) as server:
        deadline = time.monotonic() + 60
        while recent(server, 10, True)[0] != "book":  # the first answers read ClickHouse and seed
            assert time.monotonic() < deadline, "the book was never seeded"
            time.sleep(0.2)
        assert recent(server, 100, True) == ("book", stored(ch, 100, True))

        polled: list[str] = []
        stop = threading.Event()

        def poll() -> None:  # users polling during the live market
            while not stop.is_set():
                polled.append(recent(server, 50, True)[0])
                time.sleep(0.02)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        producer = PacedProducer(broker, topics["raw"], live, per_s=200)
        producer.start()
        run_topology(broker, topics, ch_url, ch_db, state, idle_timeout_s=4, resample=(), group=group)
        producer.join(30)
        assert producer.error is None
        revised = replace(live[-5], close=live[-5].close * 1.001, high=live[-5].high * 1.002)
        produce(broker, topics["raw"], [*late, revised], source="rest", batch=100)
        run_topology(broker, topics, ch_url, ch_db, state, idle_timeout_s=3, resample=(), group=group)
        stop.set()
        poller.join(10)

        assert polled.count("book") > 0.9 * len(polled), "the live market was not served from the book"
        for limit in (5, 100, 1000):
            for include_open in (True, False):
                deadline = time.monotonic() + 10
                while recent(server, limit, include_open) != (
                    "book",
                    stored(ch, limit, include_open),
                ):
                    assert time.monotonic() < deadline, f"book != table for limit={limit} open={include_open}"
                    time.sleep(0.2)
    assert stored(ch, 1000, False)[-5]["revision"] == 1
    assert len(stored(ch, 1000, False)) == 400
