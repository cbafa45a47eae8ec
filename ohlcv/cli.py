"""The ``ohlcv`` command line. Errors print one line naming what is wrong, never a traceback."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from ohlcv.errors import OhlcvError
from ohlcv.settings import Settings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
topics_app = typer.Typer(no_args_is_help=True, help="Kafka topics from the registry in schemas/topics.py.")
db_app = typer.Typer(no_args_is_help=True, help="ClickHouse schema.")
app.add_typer(topics_app, name="topics")
app.add_typer(db_app, name="db")


def _settings() -> Settings:
    return load_settings()


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


@topics_app.command("ensure")
def topics_ensure() -> None:
    """Create every registered topic that does not exist yet (idempotent)."""
    from ohlcv.infra.kafka import ensure_topics
    from ohlcv.runtime import running_broker

    settings = _settings()
    with running_broker(settings) as address:
        result = ensure_topics(address)
    for name in result.created:
        typer.echo(f"created  {name}")
    for name in result.existing:
        typer.echo(f"exists   {name}")


@topics_app.command("list")
def topics_list() -> None:
    """Print the topic registry: name, partitions, retention, key and what it carries."""
    from schemas.topics import ALL_TOPICS

    for t in ALL_TOPICS:
        typer.echo(f"{t.name}\tpartitions={t.partitions}\tretention_ms={t.retention_ms}\tkey={t.key}")
        typer.echo(f"\t{t.description}")


@topics_app.command("schemas")
def topics_schemas(out_dir: Annotated[Path, typer.Argument(help="directory to write <topic>.schema.json")]) -> None:
    """Export each topic's value JSON Schema for downstream consumers."""
    from schemas.topics import ALL_TOPICS

    out_dir.mkdir(parents=True, exist_ok=True)
    for t in ALL_TOPICS:
        path = out_dir / f"{t.name}.schema.json"
        path.write_text(json.dumps({"title": t.name, "description": t.description, **t.value_schema}, indent=2))
        typer.echo(str(path))


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending ClickHouse migrations (idempotent)."""
    from ohlcv.infra.clickhouse import make_client, migrate

    settings = _settings()
    client = make_client(settings.clickhouse_dsn)
    applied = migrate(client)
    typer.echo("\n".join(f"applied  {a}" for a in applied) if applied else "up to date")


@app.command("up")
def up(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Start the broker (embedded unless KAFKA_BROKER_ADDRESS is set), ClickHouse, and every service."""
    from ohlcv.runtime import run_stack

    _setup_logging(verbose)
    run_stack(_settings(), demo=False)


@app.command("demo")
def demo(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """`up`, plus the bundled real sample replayed as a live market."""
    from ohlcv.runtime import run_stack

    _setup_logging(verbose)
    run_stack(_settings(), demo=True)


def main() -> None:
    try:
        app(standalone_mode=False)
    except OhlcvError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
