"""The embedded Tansu broker: starts on a free port, answers Kafka metadata, and never outlives us.

The ``ohlcv up`` tests run the real command in its own process group, like a terminal would, and
check that its broker is gone after Ctrl-C (SIGINT to the whole group) and after the parent is
killed outright (SIGKILL: the kernel's parent-death signal takes the broker down).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from ohlcv.errors import BrokerUnavailableError
from ohlcv.infra.broker import EmbeddedBroker, wait_for_broker
from ohlcv.settings import Settings

pytestmark = pytest.mark.broker

OHLCV = Path(sys.executable).parent / "ohlcv"


def _poll(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie waiting for whoever adopted it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _topics(address: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": address}).list_topics(timeout=10).topics)


def test_embedded_broker_serves_metadata_on_a_free_port_and_stops(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "broker.log"
    broker = EmbeddedBroker(log_path=log)
    with pytest.raises(BrokerUnavailableError, match="not started"):
        _ = broker.address
    try:
        address = broker.start()
        assert broker.process is not None
        pid = broker.process.pid
        host, port = address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) == broker.port
        assert _port_open(int(port))
        wait_for_broker(address, timeout_s=5)
        assert isinstance(_topics(address), set)
        assert log.exists()
    finally:
        broker.stop()
    assert broker.process is None
    assert _gone(pid)
    assert not _port_open(int(port))
    broker.stop()  # a second stop is a no-op


def test_stop_with_clients_still_connected_ends_the_broker_on_its_signal_and_frees_the_port() -> None:
    """Our clients are still connected (an AdminClient has no close): the broker must exit on
    the stop signal itself (status 0), not wait for them and be killed after the grace period."""
    broker = EmbeddedBroker()
    address = broker.start()
    assert broker.process is not None and broker.port is not None
    proc, port = broker.process, broker.port
    admin = AdminClient({"bootstrap.servers": address})
    admin.create_topics([NewTopic("stop.t", 1, 1, config={"retention.ms": "60000"})])["stop.t"].result(10)
    producer = Producer({"bootstrap.servers": address})
    producer.produce("stop.t", b"x")
    assert producer.flush(10) == 0
    consumer = Consumer({"bootstrap.servers": address, "group.id": "stop", "enable.auto.commit": False})
    consumer.assign([TopicPartition("stop.t", 0, 0)])
    msg = consumer.poll(10)
    assert msg is not None and msg.value() == b"x"
    assert _established(port) >= 3  # admin, producer, consumer: all connected while it stops
    broker.stop()
    assert proc.returncode == 0  # exited on SIGINT; -9 would be the SIGKILL after the grace period
    assert _gone(proc.pid)
    assert not _port_open(port)
    with socket.socket() as s:  # the port is free for a new listener
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
    del consumer, producer, admin


def _established(port: int) -> int:
    """Established TCP connections to 127.0.0.1:``port``, from /proc/net/tcp (state 01)."""
    local = f"0100007F:{port:04X}"
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for r in rows if r.split()[1] == local and r.split()[3] == "01")


def test_two_embedded_brokers_get_different_ports() -> None:
    with EmbeddedBroker() as a, EmbeddedBroker() as b:
        assert a.port != b.port
        assert _topics(a.address) is not None and _topics(b.address) is not None


def test_wait_for_broker_on_a_closed_port_is_one_line_naming_the_variable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError) as info:
        wait_for_broker(f"127.0.0.1:{port}", timeout_s=2)
    assert time.monotonic() - started < 8
    message = str(info.value)
    assert message.startswith(f"KAFKA_BROKER_ADDRESS=127.0.0.1:{port} is unreachable")
    assert "\n" not in message


# --- `ohlcv up` as a user runs it ----------------------------------------------------------


def _clean_env(data_dir: Path) -> dict[str, str]:
    ours = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env.update(DATA_DIR=str(data_dir), API_PORT="0", TANSU_LOG="warn")
    return env


def _broker_pid(parent: int, port: int) -> int:
    """The tansu process ``parent`` started, found by its listener port in /proc."""
    needle = f"127.0.0.1:{port}"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        if ppid == parent and "tansu" in cmdline and needle in cmdline:
            return int(entry.name)
    pytest.fail(f"no tansu child of pid {parent} listening on {needle}")


@pytest.fixture
def ohlcv_up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """A running `ohlcv up` (own process group, like a terminal job) and its broker's pid."""
    data_dir = tmp_path / "data"
    run_file = data_dir / "run" / "stack.json"
    proc = subprocess.Popen(
        [str(OHLCV), "up"],
        cwd=tmp_path,
        env=_clean_env(data_dir),
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "up.log", "wb"),  # noqa: SIM115 - Popen keeps its own copy
        start_new_session=True,
    )
    broker_pid = None
    try:

        def _ready() -> bool:
            assert proc.poll() is None, (tmp_path / "up.log").read_text()
            return run_file.exists() and run_file.stat().st_size > 0

        _poll(_ready, 90, "ohlcv up to write its run file")
        info = json.loads(run_file.read_text())
        assert info["pid"] == proc.pid
        port = int(info["broker_address"].rsplit(":", 1)[1])
        broker_pid = _broker_pid(proc.pid, port)
        assert _port_open(port)
        yield proc, broker_pid, run_file
    finally:
        # whatever the test did, leave nothing running
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if broker_pid is not None and not _gone(broker_pid):
            os.kill(broker_pid, signal.SIGKILL)


@pytest.mark.slow
def test_ctrl_c_stops_ohlcv_up_and_its_broker(ohlcv_up: tuple[subprocess.Popen[bytes], int, Path]) -> None:
    proc, broker_pid, run_file = ohlcv_up
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
    _poll(lambda: proc.poll() is not None, 30, "ohlcv up to exit after SIGINT")
    assert proc.returncode == 0
    _poll(lambda: _gone(broker_pid), 10, f"broker pid {broker_pid} to exit")
    assert not run_file.exists()


@pytest.mark.slow
def test_broker_dies_with_a_killed_parent(ohlcv_up: tuple[subprocess.Popen[bytes], int, Path]) -> None:
    proc, broker_pid, _ = ohlcv_up
    proc.send_signal(signal.SIGKILL)  # no handler runs: only PR_SET_PDEATHSIG can stop the broker
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    _poll(lambda: _gone(broker_pid), 15, f"orphaned broker pid {broker_pid} to exit")
