"""The ``ohlcv`` command line. Errors print one line naming what is wrong, never a traceback."""

from __future__ import annotations

import json
import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

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
def topics_schemas(
    out_dir: Annotated[Path, typer.Argument(help="directory to write <topic>.schema.json")],
) -> None:
    """Export each topic's value JSON Schema for downstream consumers."""
    from schemas.topics import ALL_TOPICS

    out_dir.mkdir(parents=True, exist_ok=True)
    for t in ALL_TOPICS:
        path = out_dir / f"{t.name}.schema.json"
        path.write_text(
            json.dumps({"title": t.name, "description": t.description, **t.value_schema}, indent=2)
        )
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
    run_stack(_settings())


@app.command("demo")
def demo(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """`up`, plus the bundled real sample replayed as a live market."""
    import os

    from ohlcv.demo import DEMO, DEMO_SYMBOLS
    from ohlcv.runtime import run_stack

    _setup_logging(verbose)
    # the demo serves the bundled sample's symbols unless the user chose others
    chosen = {"SYMBOLS", "SYMBOL"} & set(os.environ)
    run_stack(load_settings() if chosen else load_settings(symbols=DEMO_SYMBOLS), extensions=[DEMO])


from ohlcv.cli_features import features_app  # noqa: E402
from ohlcv.cli_models import models_app, train_command  # noqa: E402
from ohlcv.cli_ops import init_command, run_app  # noqa: E402
from ohlcv.cli_risk import backtest_command  # noqa: E402

app.add_typer(run_app, name="run")
app.add_typer(features_app, name="features")
app.add_typer(models_app, name="models")
app.command("train")(train_command)
app.command("init")(init_command)
app.command("backtest")(backtest_command)


# --- import: history files into Kafka (replay) or straight into ClickHouse (bulk) -----------


class ImportMode(StrEnum):
    replay = "replay"
    bulk = "bulk"


@app.command("import")
def import_files(
    paths: Annotated[
        list[Path], typer.Argument(help="Binance Vision .zip/.csv or freqtrade .json/.csv/.feather files")
    ],
    *,
    mode: Annotated[
        ImportMode,
        typer.Option(help="replay: onto the raw Kafka topic; bulk: straight into ClickHouse"),
    ] = ImportMode.replay,
    speed: Annotated[
        float | None,
        typer.Option(min=0.001, help="replay at FACTOR x market time (60: a market minute per second)"),
    ] = None,
    partials: Annotated[int, typer.Option(min=0, help="in-progress updates before each close (replay)")] = 0,
    symbol: Annotated[str | None, typer.Option(help="instead of the symbol in the file name")] = None,
    interval: Annotated[str | None, typer.Option(help="instead of the interval in the file name")] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict/--dead-letter",
            help="stop at the first bad row, or send bad rows to the dead-letter topic and go on",
        ),
    ] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Import history files: replay them onto Kafka, or bulk-load them into ClickHouse.

    Replayed closes are source 'import'; with --speed or --partials, a simulated market: 'replay'.

    A bulk load skips candles already stored, so running it twice changes nothing.
    """
    import time

    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from ohlcv.errors import ConfigError
    from streams.importers import BadRow, detect_format

    if verbose:
        _setup_logging(verbose)
    for p in paths:
        detect_format(p)  # every file exists and has a known format before anything starts
    if mode is ImportMode.bulk and (speed is not None or partials):
        raise ConfigError("--speed and --partials apply to --mode replay only")
    settings = _settings()
    error_mode = "strict" if strict else "dead-letter"
    bad_rows: list[BadRow] = []
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:>12,.0f} rows"),
        TextColumn("{task.fields[rate]:>10,.0f} rows/s"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    started = time.perf_counter()

    def advance(task: Any, n: int) -> None:
        progress.advance(task, n)
        done = progress.tasks[task].completed
        progress.update(task, rate=done / max(time.perf_counter() - started, 1e-9))

    if mode is ImportMode.bulk:
        from ohlcv.infra.clickhouse import make_client, migrate
        from sinks.bulk_resample import resample_history
        from sinks.clickhouse_bulk import load_files

        client = make_client(settings.clickhouse_dsn)
        migrate(client)
        try:
            with progress:
                task = progress.add_task("bulk load", total=None, rate=0.0)
                result = load_files(
                    client,
                    paths,
                    symbol=symbol,
                    interval=interval,
                    mode=error_mode,
                    on_bad_row=bad_rows.append,
                    on_progress=lambda n: advance(task, n),
                )
            # bulk rows have no events, so the resampler never sees them: their higher candles
            # are built in ClickHouse by the resampler's rule (sinks.bulk_resample)
            resampled = resample_history(client, settings.resample_intervals) if result.inserted else []
        finally:
            client.close()
        if bad_rows:
            _import_dead_letters(settings, bad_rows)
        typer.echo(
            f"bulk-loaded {result.inserted:,} rows of {result.rows_read:,} from {len(paths)} file(s) into "
            f"ClickHouse ({result.skipped_existing:,} already present) in {result.elapsed_s:.1f}s, "
            f"{result.rows_per_s:,.0f} rows/s"
        )
        if any(r.written for r in resampled):
            by: dict[str, int] = {}
            for r in resampled:
                by[r.interval] = by.get(r.interval, 0) + r.written
            typer.echo(
                "resampled the stored 1m bars: "
                + ", ".join(f"{n:,} {i}" for i, n in by.items() if n)
                + " candles (RESAMPLE_INTERVALS)"
            )
    else:
        from ohlcv.runtime import read_run_file, running_broker

        if not settings.kafka_broker_address and read_run_file(settings) is None:
            # a broker of our own would take the candles and die with this command, unread
            raise ConfigError(
                f"--mode replay needs the broker the candle topology reads: no KAFKA_BROKER_ADDRESS and "
                f"no running `ohlcv up` in DATA_DIR={settings.data_dir}; start `ohlcv up` first (same "
                f"DATA_DIR), set KAFKA_BROKER_ADDRESS, or load straight into ClickHouse with --mode bulk"
            )
        from ohlcv.infra.kafka import ensure_topics
        from schemas.topics import DEAD_LETTER, RAW_KLINES
        from streams.importers import guess_market, read_candles
        from streams.replay import RawProducer, dead_letter_record, merge_by_time, replay_to_kafka

        source = "import" if speed is None and not partials else "replay"
        closed = partial = 0
        with running_broker(settings) as address:
            ensure_topics(address)
            producer = RawProducer(address)

            def on_bad_row(bad: BadRow) -> None:
                bad_rows.append(bad)
                producer.produce(DEAD_LETTER.name, *dead_letter_record(bad))

            def candles(p: Path) -> Any:
                return read_candles(
                    p, symbol=symbol, interval=interval, mode=error_mode, on_bad_row=on_bad_row
                )

            # at once: file after file; paced: one market, all files merged by time
            batches = (
                [(paths[0], merge_by_time(candles(p) for p in paths))]
                if speed is not None
                else [(p, candles(p)) for p in paths]
            )
            with progress:
                task = progress.add_task(f"replay -> {RAW_KLINES.name}", total=None, rate=0.0)
                for path, stream in batches:
                    sent = replay_to_kafka(
                        address,
                        stream,
                        partials=partials,
                        speed=speed,
                        source=source,
                        market=guess_market(path),
                        on_progress=lambda n: advance(task, n),
                        producer=producer,
                    )
                    closed += sent.closed
                    partial += sent.partial
        elapsed = time.perf_counter() - started
        typer.echo(
            f"replayed {closed:,} candles (+{partial:,} partial updates) from {len(paths)} file(s) to "
            f"{RAW_KLINES.name} at {address} in {elapsed:.1f}s, {closed / max(elapsed, 1e-9):,.0f} rows/s"
        )
    if bad_rows:
        first = bad_rows[0]
        typer.echo(
            f"{len(bad_rows):,} bad rows sent to the dead-letter topic "
            f"(first: {first.source}: {first.reason})",
            err=True,
        )


def _import_dead_letters(settings: Settings, bad_rows: list[Any]) -> None:
    from ohlcv.infra.kafka import ensure_topics
    from ohlcv.runtime import read_run_file, running_broker
    from schemas.topics import DEAD_LETTER
    from streams.replay import send_dead_letters

    if not settings.kafka_broker_address and read_run_file(settings) is None:
        typer.echo(
            "warning: no KAFKA_BROKER_ADDRESS and no running `ohlcv up` in DATA_DIR: the dead letters "
            "go to an embedded broker that stops with this command",
            err=True,
        )
    with running_broker(settings) as address:
        ensure_topics(address, (DEAD_LETTER,))
        send_dead_letters(address, bad_rows)


# --- scan: continuity of stored candles ------------------------------------------------------


def _announce_queued(settings: Settings, reports: list[tuple[Any, Any]]) -> None:
    """Tell a running stack's gap orchestrator about the segments just queued (on
    ``ohlcv.gap.queue``); without a broker to reach, its ClickHouse poll finds them."""
    from ohlcv.runtime import read_run_file
    from streams.backfill.triggers import GapNotifier

    broker = settings.kafka_broker_address or (read_run_file(settings) or {}).get("broker_address")
    queued = [(r.symbol, r.interval, q.segments()) for r, q in reports if q is not None and q.segments()]
    if broker and queued:
        notifier = GapNotifier(str(broker))
        for symbol, interval, segments in queued:
            notifier.notify(symbol, interval, segments)


@app.command("scan")
def scan_command(
    *,
    symbol: Annotated[str | None, typer.Option(help="one symbol (default: every configured SYMBOLS)")] = None,
    interval: Annotated[
        str | None, typer.Option(help="one interval (default: every ingested and resampled interval)")
    ] = None,
    days: Annotated[
        float | None, typer.Option(min=0.001, help="window: the last DAYS, ending now  [default: 365]")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="window start: epoch ms or ISO UTC (2021-03-01, 2021-03-01T12:00); bars from it on are "
            "expected. Without --to: up to the last stored bar",
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="window end, exclusive (bars opening before it), same forms. Without --from: from the "
            "first stored bar",
        ),
    ] = None,
    whole: Annotated[
        bool, typer.Option("--all", help="the whole stored span of each stream: first to last stored bar")
    ] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="write the reports as a JSON list to this file")
    ] = None,
    queue: Annotated[
        bool, typer.Option("--queue-missing", help="open gap segments for missing ranges no segment covers")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Continuity of the stored candles: expected and present bars, completeness, missing ranges.

    One window for every stream: --days (default 365, ending now), --from/--to, or --all. With
    --days and --all the span runs from the first to the last stored bar in the window, and holes
    outside it are not counted; a given --from (--to) counts the hole from (to) that bound.
    The output names each stream's scanned span (first and last expected bar, UTC).

    Computed in ClickHouse. Only --queue-missing writes (gap segments for the gap orchestrator).
    """
    import time

    from rich import box
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from ohlcv.cli_args import time_bounds
    from ohlcv.errors import ConfigError
    from ohlcv.infra.clickhouse import make_client, migrate
    from schemas.intervals import BINANCE_INTERVALS
    from streams.continuity import (
        ContinuityReport,
        QueueResult,
        ScanRangeError,
        iso_ms,
        queue_missing,
        scan,
        scan_window,
    )

    if verbose:
        _setup_logging(verbose)
    given = [name for name, on in (("--days", days is not None), ("--from/--to", start or end),
                                   ("--all", whole)) if on]  # fmt: skip
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)} are mutually exclusive: choose one window")
    start_ms, end_ms = time_bounds(start, end, empty="the window would be empty")
    settings = _settings()
    if interval is not None and interval not in BINANCE_INTERVALS:
        raise ConfigError(
            f"--interval {interval!r} is not a Binance interval, use one of {','.join(BINANCE_INTERVALS)}"
        )
    symbols = [symbol.upper()] if symbol else list(settings.symbols)
    intervals = [interval] if interval else settings.all_intervals
    streams = [(s, i) for s in symbols for i in intervals]
    window_days = None if whole else (365 if days is None else days)
    now = int(time.time() * 1000)
    for i in intervals:  # every window is checked before anything is scanned
        try:
            scan_window(i, days=window_days, start_ms=start_ms, end_ms=end_ms, now_ms=now)
        except ScanRangeError as exc:
            raise ConfigError(f"--{exc.field} {exc.reason}") from exc
    if whole:
        title = "continuity, whole stored span"
    elif start_ms is None and end_ms is None:
        title = f"continuity, last {window_days:g} days"
    else:
        lo = "the first stored bar" if start_ms is None else iso_ms(start_ms)
        hi = "the last stored bar" if end_ms is None else f"{iso_ms(end_ms)} (exclusive)"
        title = f"continuity, from {lo} to {hi}"
    client = make_client(settings.clickhouse_dsn)
    reports: list[tuple[ContinuityReport, QueueResult | None]] = []
    try:
        migrate(client)
        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(stderr=True),
        )  # fmt: skip
        with progress:
            task = progress.add_task("scan", total=len(streams))
            for s, i in streams:
                progress.update(task, description=f"scan {s} {i}")
                report = scan(client, s, i, days=window_days, start_ms=start_ms, end_ms=end_ms, now_ms=now)
                reports.append((report, queue_missing(client, report, now_ms=now) if queue else None))
                progress.advance(task)
    finally:
        client.close()
    if queue:
        _announce_queued(settings, reports)
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=0)
    for col in ("symbol", "iv", "expected", "present", "complete", "gaps", "missing", "max gap"):
        table.add_column(col, justify="left" if col in ("symbol", "iv") else "right", no_wrap=True)
    if queue:
        table.add_column("queued", justify="right", no_wrap=True)
    for report, queued in reports:
        ratio = report.completeness_ratio
        cells = [
            report.symbol, report.interval, f"{report.expected_bars:,}", f"{report.present_bars:,}",
            "-" if ratio is None else f"{ratio:.4%}", f"{report.gap_count:,}", f"{report.missing_bars:,}",
            f"{report.largest_gap_bars:,}",
        ]  # fmt: skip
        if queued is not None:
            cells.append(f"{len(queued.opened) + len(queued.merged):,}")
        table.add_row(*cells)
    Console().print(table)
    # the span each stream's figures cover, one plain line each (never cut by the terminal's width)
    for report, _ in reports:
        a, b = report.span_from_ms, report.span_to_ms
        span = (
            "nothing expected (no stored bar in the window)"
            if a is None or b is None
            else f"{iso_ms(a)} .. {iso_ms(b)}  {report.expected_bars:,} bars expected"
        )
        typer.echo(f"span {report.symbol} {report.interval}  {span}")
    if days is None and not (whole or start or end) and all(r.span_from_ms is None for r, _ in reports):
        typer.echo("hint: no stored bar in the last 365 days; --all scans the whole stored span", err=True)
    if json_path is not None:
        json_path.write_text(json.dumps([r.to_json() for r, _ in reports], indent=2))
        typer.echo(f"wrote {len(reports)} report(s) to {json_path}")


def main() -> None:
    import warnings

    # quixstreams imports authlib, which warns about its own httpx integration on import
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    try:
        app(standalone_mode=False)
    except OhlcvError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:
        # usage errors: typer vendors its own click, so match by the class name, not by type
        if type(exc).__name__ in {"UsageError", "BadParameter", "NoSuchOption", "MissingParameter",
                                  "BadOptionUsage", "BadArgumentUsage", "ClickException"}:  # fmt: skip
            show = getattr(exc, "show", None)
            if callable(show):
                show()
            sys.exit(int(getattr(exc, "exit_code", 2)))
        raise


if __name__ == "__main__":
    main()
