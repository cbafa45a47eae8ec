"""The ``ohlcv`` command line, run as a user runs it: a subprocess with its own environment.

Commands are idempotent (a second run changes nothing and says so) and every refusal is exactly
one line on stderr naming the variable at fault, with exit code 2 and no traceback.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from ohlcv.cli_ops import service_main
from ohlcv.errors import OhlcvError
from ohlcv.settings import Settings
from schemas.topics import ALL_TOPICS

OHLCV = Path(sys.executable).parent / "ohlcv"
TOPICS = sorted(t.name for t in ALL_TOPICS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**values: str) -> dict[str, str]:
    """The caller's environment without any of our settings, plus ``values``."""
    ours = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env.update(values)
    return env


def ohlcv(cwd: Path, *args: str, timeout_s: float = 120, **values: str) -> subprocess.CompletedProcess[str]:
    values.setdefault("DATA_DIR", str(cwd / "data"))
    return subprocess.run(
        [str(OHLCV), *args],
        check=False,
        cwd=cwd,
        env=_env(**values),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def _one_line_refusal(proc: subprocess.CompletedProcess[str], variable: str) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("error: ")
    assert variable in lines[0]
    return lines[0]


def _listing(stdout: str) -> dict[str, list[str]]:
    """`created  NAME` / `exists   NAME` lines, grouped by verb."""
    out: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        verb, name = line.split()
        out.setdefault(verb, []).append(name)
    return out


# --- topics ---------------------------------------------------------------------------------


@pytest.mark.broker
def test_topics_ensure_is_idempotent(broker: str, tmp_path: Path) -> None:
    admin = AdminClient({"bootstrap.servers": broker})
    before = set(admin.list_topics(timeout=10).topics)

    first = ohlcv(tmp_path, "topics", "ensure", KAFKA_BROKER_ADDRESS=broker)
    assert first.returncode == 0, first.stderr
    done = _listing(first.stdout)
    assert sorted(done.get("created", []) + done.get("exists", [])) == TOPICS
    assert sorted(done.get("created", [])) == sorted(set(TOPICS) - before)

    topics = admin.list_topics(timeout=10).topics
    assert set(TOPICS) <= set(topics)
    for spec in ALL_TOPICS:
        assert len(topics[spec.name].partitions) == spec.partitions
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in TOPICS]
    for resource, future in admin.describe_configs(resources, request_timeout=10).items():
        config = {k: v.value for k, v in future.result().items()}
        spec = next(t for t in ALL_TOPICS if t.name == resource.name)
        assert config["retention.ms"] == str(spec.retention_ms)
        assert config["retention.bytes"] == str(spec.retention_bytes)

    second = ohlcv(tmp_path, "topics", "ensure", KAFKA_BROKER_ADDRESS=broker)
    assert second.returncode == 0, second.stderr
    assert _listing(second.stdout) == {"exists": TOPICS}
    assert set(admin.list_topics(timeout=10).topics) == set(topics)


def test_topics_ensure_on_an_unreachable_broker_is_one_line(tmp_path: Path) -> None:
    address = f"127.0.0.1:{_free_port()}"
    started = time.monotonic()
    proc = ohlcv(tmp_path, "topics", "ensure", timeout_s=60, KAFKA_BROKER_ADDRESS=address)
    assert time.monotonic() - started < 15
    line = _one_line_refusal(proc, "KAFKA_BROKER_ADDRESS")
    assert address in line
    assert proc.stdout == ""


def test_topics_list_prints_every_topic_with_its_retention(tmp_path: Path) -> None:
    proc = ohlcv(tmp_path, "topics", "list")
    assert proc.returncode == 0, proc.stderr
    for spec in ALL_TOPICS:
        assert f"{spec.name}\tpartitions={spec.partitions}\tretention_ms={spec.retention_ms}" in proc.stdout


# --- db -------------------------------------------------------------------------------------


@pytest.mark.clickhouse
def test_db_migrate_is_idempotent(tmp_path: Path) -> None:
    url = f"chdb://{tmp_path / 'ch'}"
    first = ohlcv(tmp_path, "db", "migrate", CLICKHOUSE_URL=url)
    assert first.returncode == 0, first.stderr
    applied = [line.split()[1] for line in first.stdout.splitlines()]
    assert applied and all(line.startswith("applied  ") for line in first.stdout.splitlines())
    assert applied[0] == "0001_candles"
    assert applied == sorted(applied)

    second = ohlcv(tmp_path, "db", "migrate", CLICKHOUSE_URL=url)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "up to date"


def test_db_migrate_on_an_unreachable_server_is_one_line_with_the_password_masked(tmp_path: Path) -> None:
    port = _free_port()
    proc = ohlcv(
        tmp_path, "db", "migrate", timeout_s=60, CLICKHOUSE_URL=f"http://u:hunter2@127.0.0.1:{port}/db"
    )
    line = _one_line_refusal(proc, "CLICKHOUSE_URL")
    assert f"http://u:***@127.0.0.1:{port}/db" in line
    assert "hunter2" not in proc.stderr + proc.stdout


def test_invalid_interval_is_refused_before_anything_runs(tmp_path: Path) -> None:
    proc = ohlcv(tmp_path, "db", "migrate", INTERVALS="7m")
    line = _one_line_refusal(proc, "INTERVALS")
    assert "'7m'" in line
    assert not (tmp_path / "data").exists()


# --- production commands (ohlcv.cli_ops) ----------------------------------------------------


@pytest.mark.parametrize("command", [("init",), ("run", "api"), ("run", "candles"), ("run", "ingest")])
def test_production_commands_need_a_kafka_cluster(tmp_path: Path, command: tuple[str, ...]) -> None:
    proc = ohlcv(tmp_path, *command)
    line = _one_line_refusal(proc, "KAFKA_BROKER_ADDRESS")
    assert f"`ohlcv {' '.join(command)}`" in line
    assert not (tmp_path / "data").exists()  # nothing embedded was started


@pytest.mark.broker
@pytest.mark.clickhouse
def test_init_migrates_and_ensures_topics_idempotently(broker: str, tmp_path: Path) -> None:
    url = f"chdb://{tmp_path / 'ch'}"
    first = ohlcv(tmp_path, "init", KAFKA_BROKER_ADDRESS=broker, CLICKHOUSE_URL=url)
    assert first.returncode == 0, first.stderr
    done = _listing(first.stdout)
    assert done["applied"][0] == "0001_candles"
    assert sorted(done.get("created", []) + done.get("exists", [])) == TOPICS

    second = ohlcv(tmp_path, "init", KAFKA_BROKER_ADDRESS=broker, CLICKHOUSE_URL=url)
    assert second.returncode == 0, second.stderr
    lines = second.stdout.splitlines()
    assert lines[0] == "migrations up to date"
    assert _listing("\n".join(lines[1:])) == {"exists": TOPICS}


@pytest.mark.broker
def test_run_api_serves_until_sigterm(broker: str, tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [str(OHLCV), "run", "api"],
        cwd=tmp_path,
        env=_env(KAFKA_BROKER_ADDRESS=broker, API_PORT=str(port), DATA_DIR=str(tmp_path / "data")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail("`ohlcv run api` did not answer /healthz within 60s")
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        proc.send_signal(signal.SIGTERM)  # what `docker compose stop` sends
        proc.wait(30)
        log = proc.stderr.read().decode() if proc.stderr else ""
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.returncode in {0, -signal.SIGTERM}, log
        assert "Application shutdown complete" in log
        assert "Traceback" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


def test_service_runners_are_resolved_lazily() -> None:
    with pytest.raises(OhlcvError, match=r"the x service is not built yet: module streams\.no_such_runner"):
        service_main("streams.no_such_runner", "the x service")
    with pytest.raises(OhlcvError, match=r"schemas\.intervals has no main\(settings\)"):
        service_main("schemas.intervals", "the x service")
    assert service_main("ohlcv.cli", "the cli") is not None  # a module with a main()
