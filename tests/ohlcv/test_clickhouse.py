"""The ClickHouse client factory and the migration runner, against the real chDB engine."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest
from clickhouse_connect.driver.client import Client

from ohlcv.errors import ClickHouseUnavailableError, MigrationError
from ohlcv.infra.clickhouse import MIGRATIONS_TABLE, Migration, load_migrations, make_client, migrate

pytestmark = pytest.mark.clickhouse


@pytest.fixture
def fresh(ch_url: str, ch_db: str) -> Iterator[Client]:
    """A client on a database that make_client just created, with no migration applied."""
    client = make_client(ch_url, ch_db)
    yield client
    client.command(f"DROP DATABASE IF EXISTS `{ch_db}`")
    client.close()


def _tables(client: Client, db: str) -> set[str]:
    rows = client.query("SELECT name FROM system.tables WHERE database = {db:String}", parameters={"db": db})
    return {r[0] for r in rows.result_rows}


def test_make_client_creates_the_database_and_uses_it(fresh: Client, ch_db: str) -> None:
    count = fresh.query(
        "SELECT count() FROM system.databases WHERE name = {db:String}", parameters={"db": ch_db}
    ).result_rows[0][0]
    assert count == 1
    assert fresh.query("SELECT currentDatabase()").result_rows[0][0] == ch_db


def test_make_client_refuses_a_database_name_that_is_not_an_identifier(ch_url: str) -> None:
    with pytest.raises(ClickHouseUnavailableError, match="not a plain identifier"):
        make_client(ch_url, "x`; DROP DATABASE system; --")


def test_migrations_are_numbered_in_order_and_split_into_statements() -> None:
    migrations = load_migrations()
    versions = [m.version for m in migrations]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert versions[0] == 1
    for m in migrations:
        statements = m.statements()
        assert statements, m.name
        assert all(not s.lstrip().startswith("--") and not s.endswith(";") for s in statements)


def test_migrate_applies_everything_once(fresh: Client, ch_db: str) -> None:
    expected = [f"{m.version:04d}_{m.name}" for m in load_migrations()]
    assert migrate(fresh) == expected
    tables = _tables(fresh, ch_db)
    assert {MIGRATIONS_TABLE, "ohlcv_candles"} <= tables
    recorded = fresh.query(f"SELECT version, checksum FROM {MIGRATIONS_TABLE} FINAL ORDER BY version")
    assert [(int(v), c) for v, c in recorded.result_rows] == [
        (m.version, m.checksum) for m in load_migrations()
    ]

    assert migrate(fresh) == []
    assert _tables(fresh, ch_db) == tables
    rows = fresh.query(f"SELECT count() FROM {MIGRATIONS_TABLE} FINAL").result_rows[0][0]
    assert rows == len(expected)


def test_a_changed_migration_is_refused(fresh: Client) -> None:
    migrate(fresh)
    first = load_migrations()[0]
    # what the record looks like if 0001's file had different content when it ran
    fresh.insert(
        MIGRATIONS_TABLE,
        [(first.version, first.name, "0" * 64)],
        column_names=["version", "name", "checksum"],
    )
    with pytest.raises(MigrationError, match=rf"{first.version:04d}_{first.name}\.sql changed"):
        migrate(fresh)


def test_a_failing_migration_names_its_file(fresh: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = Migration(9999, "broken", "CREATE TABLE nope (x UInt8) ENGINE = NoSuchEngine;")
    monkeypatch.setattr("ohlcv.infra.clickhouse.load_migrations", lambda: [*load_migrations(), broken])
    with pytest.raises(MigrationError, match=r"9999_broken\.sql failed"):
        migrate(fresh)
    done = fresh.query(f"SELECT max(version) FROM {MIGRATIONS_TABLE} FINAL").result_rows[0][0]
    assert done == load_migrations()[-1].version  # the failed one is not recorded


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_is_one_line_naming_the_url_without_password() -> None:
    port = _closed_port()
    with pytest.raises(ClickHouseUnavailableError) as info:
        make_client(f"http://ohlcv:pw-secret@127.0.0.1:{port}/ohlcv")
    message = str(info.value)
    assert message.startswith(f"CLICKHOUSE_URL=http://ohlcv:***@127.0.0.1:{port}/ohlcv is unreachable")
    assert "pw-secret" not in message
    assert "\n" not in message


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ClickHouseUnavailableError, match=re.escape("expected chdb:///path or http(s)://")):
        make_client("mysql://u:p@host/db")
