"""The one ClickHouse client factory and the migration runner.

``make_client(url)`` returns a clickhouse-connect client for either an embedded chDB path
(``chdb:///abs/path``) or a server (``http(s)://user:pass@host:8123/db``); nothing else in the
code knows which. chDB allows one engine path per OS process; clients on that path share it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from ohlcv.errors import ClickHouseUnavailableError, MigrationError

logger = logging.getLogger(__name__)


class _DemoteDriverWarning(logging.Filter):
    """clickhouse-connect logs a warning for each transport error and then raises it; callers get it
    as one error line (ClickHouseUnavailableError), so the duplicate warning is demoted to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Unexpected Http Driver Exception":
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


logging.getLogger("clickhouse_connect.driver._backend.http_sync").addFilter(_DemoteDriverWarning())

DEFAULT_DATABASE = "ohlcv"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def make_client(url: str, database: str | None = None, *, create_database: bool = True) -> Client:
    """Connect to ClickHouse at ``url`` and use ``database`` (from the URL path, else 'ohlcv').

    Raises ClickHouseUnavailableError with one line naming CLICKHOUSE_URL when it cannot connect.
    """
    parsed = urlparse(url)
    safe_url = url.replace(f":{parsed.password}@", ":***@") if parsed.password else url
    if parsed.scheme == "chdb":
        path = parsed.path or ":memory:"
        db = database or DEFAULT_DATABASE
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
            admin = clickhouse_connect.get_client(dsn=f"chdb://{path}")
            if create_database:
                admin.command(f"CREATE DATABASE IF NOT EXISTS {_ident(db)}")
            admin.close()
            return clickhouse_connect.get_client(dsn=f"chdb://{path}", database=db)
        except ClickHouseUnavailableError:
            raise
        except Exception as exc:
            raise ClickHouseUnavailableError(f"CLICKHOUSE_URL={safe_url}: cannot open chDB: {exc}") from exc
    if parsed.scheme in ("http", "https"):
        db = database or (parsed.path.strip("/") or DEFAULT_DATABASE)
        try:
            client = clickhouse_connect.get_client(
                host=parsed.hostname or "localhost",
                port=parsed.port or (8443 if parsed.scheme == "https" else 8123),
                username=parsed.username or "default",
                password=parsed.password or "",
                secure=parsed.scheme == "https",
                connect_timeout=5,
            )
            if create_database:
                client.command(f"CREATE DATABASE IF NOT EXISTS {_ident(db)}")
            client.database = db
            return client
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ClickHouseUnavailableError(f"CLICKHOUSE_URL={safe_url} is unreachable: {first}") from exc
    raise ClickHouseUnavailableError(
        f"CLICKHOUSE_URL={safe_url}: expected chdb:///path or http(s)://user:pass@host:8123/db"
    )


def _ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ClickHouseUnavailableError(f"database name {name!r} is not a plain identifier")
    return f"`{name}`"


# --- migrations --------------------------------------------------------------------------

MIGRATIONS_TABLE = "schema_migrations"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        body = "\n".join(line for line in self.sql.splitlines() if not line.strip().startswith("--"))
        return [s.strip() for s in body.split(";") if s.strip()]


def load_migrations() -> list[Migration]:
    """Versioned SQL files from ``schemas/migrations`` (NNNN_name.sql), in version order."""
    out = []
    for entry in resources.files("schemas").joinpath("migrations").iterdir():
        m = re.match(r"^(\d{4})_(\w+)\.sql$", entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    return sorted(out, key=lambda m: m.version)


def migrate(client: Client) -> list[str]:
    """Apply every migration not yet recorded; returns the names applied (empty when up to date).

    A recorded migration whose file changed since is an error: migrations are append-only.
    """
    client.command(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (version UInt32, name String, "
        "checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {
        int(v): str(c)
        for v, c in client.query(
            f"SELECT version, checksum FROM {MIGRATIONS_TABLE} FINAL"  # noqa: S608 - a constant name
        ).result_rows
    }
    applied = []
    for mig in load_migrations():
        if mig.version in done:
            if done[mig.version] != mig.checksum:
                raise MigrationError(
                    f"migration {mig.version:04d}_{mig.name}.sql changed after it was applied; "
                    "add a new migration instead of editing an applied one"
                )
            continue
        for stmt in mig.statements():
            try:
                client.command(stmt)
            except Exception as exc:
                raise MigrationError(f"migration {mig.version:04d}_{mig.name}.sql failed: {exc}") from exc
        client.insert(
            MIGRATIONS_TABLE,
            [(mig.version, mig.name, mig.checksum)],
            column_names=["version", "name", "checksum"],
        )
        logger.info("migration applied version=%04d name=%s", mig.version, mig.name)
        applied.append(f"{mig.version:04d}_{mig.name}")
    return applied
