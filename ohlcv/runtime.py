"""Composition of the running stack: broker, ClickHouse, topics, schema, and the services.

In embedded mode everything runs in this one process, because chDB allows one OS process per
data path: the API (uvicorn, in a thread), the topologies (Quix Streams, in the main thread,
which owns signal handling) and the sources. In production each service is its own process
(see docker-compose.yml) and talks to Kafka and a ClickHouse server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ohlcv.errors import OhlcvError
from ohlcv.infra.broker import EmbeddedBroker, wait_for_broker
from ohlcv.services import Extension, Stack, start_services
from ohlcv.settings import Settings

logger = logging.getLogger(__name__)


def _run_file(settings: Settings) -> Path:
    return settings.data_dir / "run" / "stack.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_run_file(settings: Settings) -> dict[str, Any] | None:
    """What a running ``ohlcv up`` in this DATA_DIR published, if it is still alive."""
    path = _run_file(settings)
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if _pid_alive(int(info.get("pid", -1))) else None


@contextlib.contextmanager
def running_broker(settings: Settings) -> Iterator[str]:
    """The configured broker, else the embedded one of a running stack, else a fresh embedded one."""
    if settings.kafka_broker_address:
        wait_for_broker(settings.kafka_broker_address, timeout_s=10.0)
        yield settings.kafka_broker_address
        return
    info = read_run_file(settings)
    if info and info.get("broker_address"):
        yield str(info["broker_address"])
        return
    with EmbeddedBroker(log_path=settings.data_dir / "logs" / "broker.log") as broker:
        yield broker.address


@contextlib.contextmanager
def started_infrastructure(settings: Settings) -> Iterator[Stack]:
    """Start (or reach) the broker and ClickHouse, apply migrations and ensure topics."""
    from ohlcv.infra.clickhouse import make_client, migrate
    from ohlcv.infra.kafka import ensure_topics

    client = make_client(settings.clickhouse_dsn)
    applied = migrate(client)
    logger.info("clickhouse ready url=%s migrations_applied=%d", _safe(settings.clickhouse_dsn), len(applied))
    client.close()
    broker: EmbeddedBroker | None = None
    if settings.kafka_broker_address:
        wait_for_broker(settings.kafka_broker_address, timeout_s=10.0)
        address = settings.kafka_broker_address
    else:
        broker = EmbeddedBroker(log_path=settings.data_dir / "logs" / "broker.log")
        address = broker.start()
    try:
        ensure_topics(address)
        yield Stack(settings=settings, broker_address=address, broker=broker)
    finally:
        if broker is not None:
            broker.stop()


def _safe(url: str) -> str:
    from urllib.parse import urlparse

    p = urlparse(url)
    return url.replace(f":{p.password}@", ":***@") if p.password else url


def run_stack(settings: Settings, *, extensions: Sequence[Extension] = ()) -> None:
    """Run every service (and the extensions') until SIGINT/SIGTERM, then stop them all and the
    embedded broker."""
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        logger.info("signal %s received, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    with started_infrastructure(settings) as stack:
        run_file = _run_file(settings)
        run_file.parent.mkdir(parents=True, exist_ok=True)
        with start_services(stack, stop=stop, extensions=extensions) as services:
            # whole or absent for a reader (rename is atomic), and published before /healthz is ok
            tmp = run_file.with_suffix(".tmp")
            tmp.write_text(
                json.dumps(
                    {"pid": os.getpid(), "broker_address": stack.broker_address, "api_url": stack.api_url}
                )
            )
            tmp.replace(run_file)
            stack.ready.set()
            print(f"broker      {stack.broker_address}{' (embedded)' if stack.broker else ''}", flush=True)
            print(f"clickhouse  {_safe(settings.clickhouse_dsn)}", flush=True)
            if stack.api_url:
                print(f"api         {stack.api_url}/docs   metrics {stack.api_url}/metrics", flush=True)
                print(f"console     {stack.api_url}/   (the web console)", flush=True)
            print("ready — Ctrl-C stops everything", flush=True)
            try:
                services.run_until(stop)
            finally:
                with contextlib.suppress(OSError):
                    run_file.unlink()
    logger.info("stopped")


def wait_until(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise OhlcvError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)
