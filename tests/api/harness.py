"""A real uvicorn server in a thread, WebSocket clients in threads, and a paced kline producer.

The Quix application installs signal handlers, which only work in the main thread, so WebSocket
tests run the topology in the main thread and everything else here, in threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

import orjson
import uvicorn
from clickhouse_connect.driver.client import Client
from confluent_kafka import Producer
from fastapi import FastAPI

from api.main import server_config
from schemas.klines import Candle, raw_from_candle


class ApiServer:
    """``with ApiServer(app) as s: s.ws_url`` — uvicorn on a free 127.0.0.1 port, in a thread.

    ``sndbuf`` sets SO_SNDBUF on the listening socket (accepted sockets inherit it), so a test
    can make a client that does not read back-pressure the server after a few KB instead of MBs.
    """

    def __init__(self, app: FastAPI, *, sndbuf: int | None = None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sndbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        # the shipped server config (the listening socket given to run() replaces host and port)
        self.server = uvicorn.Server(server_config(app, app.state.settings))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/ohlcv"

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
        assert not self.thread.is_alive(), "uvicorn did not stop"


T = TypeVar("T")
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="ws-client")


def in_thread(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> concurrent.futures.Future[T]:
    """Run ``coro_fn()`` on its own event loop in a worker thread."""
    return _POOL.submit(lambda: asyncio.run(coro_fn()))


def partial_of(c: Candle) -> Candle:
    """The same candle in progress (Binance ``x:false``), with a slightly different close."""
    return dataclasses.replace(c, is_closed=False, close=c.open, volume=c.volume / 2, source="ws")


class PacedProducer(threading.Thread):
    """Produces ``candles`` (each preceded by its in-progress version) at ``per_s`` klines/s."""

    def __init__(
        self, broker: str, topic: str, candles: Iterable[Candle], per_s: float, with_partials: bool = True
    ):
        super().__init__(daemon=True, name="paced-producer")
        self.broker, self.topic, self.candles = broker, topic, list(candles)
        self.per_s, self.with_partials = per_s, with_partials
        self.produced = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            p = Producer({"bootstrap.servers": self.broker, "linger.ms": 2})
            t0 = time.monotonic()
            for c in self.candles:
                for k in (partial_of(c), c) if self.with_partials else (c,):
                    p.produce(
                        self.topic,
                        key=k.key,
                        value=orjson.dumps(raw_from_candle(k, source=k.source, received_at=0)),
                    )
                    self.produced += 1
                    p.poll(0)
                    wait = t0 + self.produced / self.per_s - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
            p.flush(30)
        except BaseException as exc:
            self.error = exc


def max_seq(ch: Client, symbol: str, interval: str) -> int:
    rows = ch.query(
        "SELECT max(seq) FROM ohlcv_events WHERE symbol = {s:String} AND interval = {i:String}",
        parameters={"s": symbol, "i": interval},
    ).result_rows
    return int(rows[0][0] or 0)


def stored_types(ch: Client, symbol: str, interval: str) -> dict[int, str]:
    rows = ch.query(
        "SELECT seq, any(type) FROM ohlcv_events WHERE symbol = {s:String} AND interval = {i:String} "
        "GROUP BY seq",
        parameters={"s": symbol, "i": interval},
    ).result_rows
    return {int(s): str(t) for s, t in rows}
