"""API benchmark: REST ``recent`` latency under a fixed request rate, and WebSocket fan-out.

Run: ``.venv/bin/python -m bench.api_bench [--rate 200] [--duration 15] [--clients 500]``.
Prints one JSON object.

Setup: an embedded broker; a server subprocess that runs, like ``ohlcv up`` in embedded mode,
the candle topology (main thread) and the API under uvicorn (a thread) on one chDB database,
loaded with real LINKUSDT 1m candles through the topology. The load generator and the
WebSocket clients run in this process, so the server is measured over real sockets.

1. ``baseline_healthz``: ``/healthz`` at the same rate (the cost of HTTP + middleware alone);
2. ``recent``: ``/api/ohlcv/recent?limit=100`` at ``--rate`` req/s for ``--duration`` s,
   open loop (requests are sent on schedule whatever the answers do), latency measured from
   the scheduled send time, so queueing shows; after the route's live book is seeded
   (``served_from`` counts the ``X-Recent-Source`` of the answers: book or clickhouse);
3. ``ws_fanout``: ``--clients`` WebSocket clients hold a snapshot; then one closed kline at a
   time is produced to the raw topic and we time, from the produce call, the ``append`` of that
   candle at a plain Kafka consumer of the events topic (``pipeline_ms``: the topology alone,
   the baseline) and at every client (first, p50, p99, last); ``all_deliveries`` pools every
   client's every candle, ``p99_ms_median`` is the median over the candles of each one's p99.
   The clients are websockets' sans-I/O protocol on asyncio callbacks (``_WsClient``), the
   cheapest real client, since they share the server's cores.

Both processes share this machine's cores, so the figures include the load generator's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import orjson
from confluent_kafka import Consumer, Producer
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from ohlcv.infra.broker import EMBEDDED_CONSUMER_CONFIG, EmbeddedBroker, free_port
from ohlcv.infra.process import stop_process
from schemas.klines import Candle, raw_from_candle
from tests.topologies.helpers import vision_candles
from tests.topologies.pipeline import produce, unique_topics

SYMBOL = "LINKUSDT"
KEY = "bench-key"
AUTH = {"X-API-Key": KEY}
N_LOADED = 1500


# --- the server process ---------------------------------------------------------------------
def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from api.main import create_app, server_config
    from ohlcv.infra.clickhouse import make_client, migrate
    from ohlcv.settings import Settings
    from topologies.runner import TopologyConfig, build_application, tune_gc

    url = f"chdb://{args.chdb}"
    migrate(make_client(url, args.db))
    settings = Settings(
        _env_file=None, symbols=[SYMBOL], intervals=["1m"], resample_intervals=[], api_key=KEY
    )  # type: ignore[call-arg]
    api = create_app(
        settings,
        broker_address=args.broker,
        clickhouse_client_factory=lambda: make_client(url, args.db),
        events_topic=args.events,
    )
    server = uvicorn.Server(server_config(api, settings, port=args.port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    cfg = TopologyConfig(
        broker_address=args.broker, clickhouse_url=url, clickhouse_database=args.db,
        consumer_group=f"bench-{uuid.uuid4().hex[:6]}", state_dir=Path(args.state), embedded_broker=True,
        resample_intervals=(), raw_topic=args.raw, events_topic=args.events, deadletter_topic=args.dead,
    )  # fmt: skip
    app = build_application(cfg)
    tune_gc()  # as `ohlcv up` does
    app.run()  # until SIGTERM (Quix handles it in the main thread)
    server.should_exit = True
    thread.join(20)


# --- measurements ---------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def summary_ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(pct(values, 0.50) * 1000, 2),
        "p90_ms": round(pct(values, 0.90) * 1000, 2),
        "p99_ms": round(pct(values, 0.99) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2) if values else float("nan"),
    }


class _Conn:
    """One keep-alive HTTP/1.1 connection: a load generator far cheaper than a full client, so
    the figures are the server's and not the generator's (both share this machine)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def get(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
            elif line[:16].lower() == b"x-recent-source:":
                self.source = line[16:].strip().decode()
        await self.reader.readexactly(length)
        return status

    source = ""


async def open_loop(host: str, port: int, target: str, rate: float, duration_s: float) -> dict[str, Any]:
    n = int(rate * duration_s)
    request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {KEY}\r\n\r\n".encode()
    idle: list[_Conn] = []
    lat: list[float] = []
    statuses: dict[str, int] = {}

    async def conn() -> _Conn:
        return idle.pop() if idle else _Conn(*await asyncio.open_connection(host, port))

    c = await conn()
    await c.get(request)  # warm the route and the caches (for recent: until the book answers)
    deadline = time.perf_counter() + 30
    while c.source == "clickhouse" and time.perf_counter() < deadline:
        await asyncio.sleep(0.1)
        await c.get(request)
    idle.append(c)
    sources: dict[str, int] = {}
    t0 = time.perf_counter() + 0.2

    async def one(i: int) -> None:
        scheduled = t0 + i / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        status = "error"
        for attempt in range(2):  # a kept-alive connection the server closed is retried on a new one
            try:
                c = await conn() if attempt == 0 else _Conn(*await asyncio.open_connection(host, port))
                status = str(await c.get(request))
                if c.source:
                    sources[c.source] = sources.get(c.source, 0) + 1
                idle.append(c)
                break
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                status = type(exc).__name__
        statuses[status] = statuses.get(status, 0) + 1
        lat.append(time.perf_counter() - scheduled)

    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - t0
    for c in idle:
        c.writer.close()
    return {
        "requests": n, "achieved_rps": round(n / elapsed, 1), "statuses": statuses,
        **({"served_from": sources} if sources else {}), "connections": len(idle), **summary_ms(lat),
    }  # fmt: skip


class _WsClient(asyncio.Protocol):
    """One WebSocket client: websockets' sans-I/O ``ClientProtocol`` driven by asyncio callbacks.

    The time of a message is taken in ``data_received``, as its bytes reach this process, and
    no task runs per client: 500 of them cost the load generator a fraction of what 500
    ``websockets.connect`` sessions do, so the figures are the server's (both share the cores).
    """

    def __init__(self, url: str, compression: str | None, on_text: Callable[[bytes, float], None]):
        extensions = [ClientPerMessageDeflateFactory()] if compression == "deflate" else None
        self.proto = ClientProtocol(parse_uri(url), extensions=extensions, max_size=2**24)
        self.on_text = on_text
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._parts: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        request = self.proto.connect()
        request.headers.update(AUTH)
        self.proto.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.proto.receive_data(data)
        for ev in self.proto.events_received():
            if isinstance(ev, Response):
                if self.proto.handshake_exc is not None:
                    self.opened.set_exception(self.proto.handshake_exc)
                else:
                    self.opened.set_result(None)
            elif isinstance(ev, Frame) and ev.opcode in (Opcode.TEXT, Opcode.CONT):
                self._parts.append(bytes(ev.data))
                if ev.fin:
                    text, self._parts = b"".join(self._parts), []
                    self.on_text(text, now)
        self._flush()

    def _flush(self) -> None:
        assert self.transport is not None
        for chunk in self.proto.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed before the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.proto.send_close(1000)
            self._flush()
            self.transport.close()


async def fanout(
    ws_url: str,
    clients: int,
    candles: list[Candle],
    warm: Candle,
    broker: str,
    raw: str,
    events: str,
    compression: str | None,
) -> dict[str, Any]:
    got: dict[int, list[float]] = {c.open_time: [] for c in candles}
    snapshots = 0
    connected = asyncio.Event()

    def on_text(text: bytes, now: float) -> None:
        nonlocal snapshots
        if b'"snapshot"' in text[:40]:
            snapshots += 1
            if snapshots == clients:
                connected.set()
        elif b'"append"' in text:
            for c in orjson.loads(text)["candles"]:
                if c["open_time"] in got:
                    got[c["open_time"]].append(now)

    loop = asyncio.get_running_loop()
    url = f"{ws_url}?symbol={SYMBOL}&interval=1m&limit=100"
    host, port = url.split("/")[2].split(":")
    t_connect = time.perf_counter()
    conns: list[_WsClient] = []
    for i in range(clients):
        client = _WsClient(url, compression, on_text)
        await loop.create_connection(lambda c=client: c, host, int(port))  # type: ignore[misc]
        conns.append(client)
        if i % 50 == 49:
            await asyncio.sleep(0.2)
    await asyncio.gather(*(c.opened for c in conns))
    negotiated = sorted({e.name for c in conns for e in c.proto.extensions}) or ["none"]
    await asyncio.wait_for(connected.wait(), 180)
    connect_s = time.perf_counter() - t_connect

    # the baseline: the same appends read straight from the events topic
    stop = threading.Event()
    consumer = Consumer({"bootstrap.servers": broker, "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "latest", **EMBEDDED_CONSUMER_CONFIG})  # fmt: skip
    consumer.subscribe([events])
    consumer.poll(6.0)  # join the group and get the assignment
    pipeline: dict[int, float] = {}

    def watch_events() -> None:
        while not stop.is_set():
            m = consumer.poll(0.05)
            if m is None or m.error():
                continue
            ev = orjson.loads(m.value())
            if ev.get("type") == "append":
                for c in ev["candles"]:
                    pipeline.setdefault(c["open_time"], time.time())

    watcher = threading.Thread(target=watch_events, daemon=True)
    watcher.start()
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 0})
    # connected to the partition leader before any timing: a candle already stored, which the
    # topology drops as an identical duplicate
    producer.produce(raw, key=warm.key, value=orjson.dumps(raw_from_candle(warm, source="ws", received_at=0)))
    producer.flush(10)
    await asyncio.sleep(1.0)
    produced: dict[int, float] = {}
    for c in candles:
        produced[c.open_time] = time.time()
        producer.produce(raw, key=c.key, value=orjson.dumps(raw_from_candle(c, source="ws", received_at=0)))
        producer.flush(10)
        deadline = time.monotonic() + 30
        while len(got[c.open_time]) < clients and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
    stop.set()
    for client in conns:
        client.close()
    await asyncio.wait([c.closed for c in conns], timeout=10)
    watcher.join(5)
    consumer.close()

    rounds = []
    for c in candles:
        t = [x - produced[c.open_time] for x in got[c.open_time]]
        rounds.append({
            "received_by": len(t),
            "pipeline_ms": round((pipeline.get(c.open_time, float("nan")) - produced[c.open_time]) * 1000, 1),
            "first_ms": round(min(t) * 1000, 1) if t else None,
            "p50_ms": round(pct(t, 0.5) * 1000, 1),
            "p99_ms": round(pct(t, 0.99) * 1000, 1),
            "last_ms": round(max(t) * 1000, 1) if t else None,
        })  # fmt: skip
    pooled = [x - produced[t] for t, xs in got.items() for x in xs]
    lasts = [r["last_ms"] for r in rounds if r["last_ms"] is not None]
    p99s: list[float] = [r["p99_ms"] for r in rounds]
    return {
        "clients": clients,
        "compression_offered": compression or "none",
        "compression_negotiated": ",".join(negotiated),
        "connect_and_snapshot_s": round(connect_s, 2),
        "candles": len(candles),
        "all_deliveries": {
            "count": len(pooled),
            "p50_ms": round(pct(pooled, 0.5) * 1000, 1),
            "p99_ms": round(pct(pooled, 0.99) * 1000, 1),
        },
        "p99_ms_median": round(pct(p99s, 0.5), 1) if p99s else None,
        "last_client_ms_median": round(pct(lasts, 0.5), 1) if lasts else None,
        "rounds": rounds,
    }


def wait_loaded(http: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{http}/api/ohlcv/meta", params={"symbol": SYMBOL, "interval": "1m"}, headers=AUTH)
            if r.status_code == 200 and r.json()["count"] >= N_LOADED:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the server did not load {N_LOADED} candles within {timeout_s:.0f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")
    s = sub.add_parser("serve")
    for name in ("broker", "chdb", "db", "raw", "events", "dead", "state"):
        s.add_argument(f"--{name}", required=True)
    s.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--candles", type=int, default=8)
    ap.add_argument(
        "--ws-compression", choices=["deflate", "none"], default="deflate",
        help="permessage-deflate offered by the clients (browsers offer it); the server accepts it "
        "only with API_WS_DEFLATE=true",
    )  # fmt: skip
    args = ap.parse_args()
    if args.cmd == "serve":
        serve(args)
        return

    all_candles = list(vision_candles(SYMBOL))
    loaded, fresh = all_candles[:N_LOADED], all_candles[N_LOADED : N_LOADED + args.candles]
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        topics = unique_topics(broker.address, f"b{uuid.uuid4().hex[:6]}.")
        produce(broker.address, topics["raw"], loaded)
        port = free_port()
        cmd = [
            sys.executable, "-m", "bench.api_bench", "serve", "--broker", broker.address,
            "--chdb", str(Path(tmp) / "ch"), "--db", "bench", "--raw", topics["raw"],
            "--events", topics["events"], "--dead", topics["dead"], "--state", str(Path(tmp) / "state"),
            "--port", str(port),
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parent.parent, env=os.environ.copy())
        http = f"http://127.0.0.1:{port}"
        try:
            t0 = time.perf_counter()
            wait_loaded(http)
            load_s = time.perf_counter() - t0
            baseline = asyncio.run(open_loop("127.0.0.1", port, "/healthz", args.rate, args.duration))
            target = f"/api/ohlcv/recent?symbol={SYMBOL}&interval=1m&limit=100"
            recent = asyncio.run(open_loop("127.0.0.1", port, target, args.rate, args.duration))
            ws = asyncio.run(
                fanout(f"ws://127.0.0.1:{port}/ws/ohlcv", args.clients, fresh, loaded[-1], broker.address,
                       topics["raw"], topics["events"], None if args.ws_compression == "none" else "deflate")
            )  # fmt: skip
        finally:
            stop_process(proc, signal.SIGTERM, 30)
    print(json.dumps({
        "benchmark": "api", "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus", "python": platform.python_version(),
        "versions": {p: version(p) for p in ("fastapi", "uvicorn", "websockets", "chdb", "confluent-kafka")},
        "loaded_candles": N_LOADED, "load_through_topology_s": round(load_s, 1),
        "rate_rps": args.rate, "duration_s": args.duration,
        "baseline_healthz": baseline, "recent_limit_100": recent, "ws_fanout": ws,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
