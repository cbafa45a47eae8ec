"""``ohlcv features rebuild``: feature rows for stored candles (``topologies.feature_rebuild``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ohlcv.errors import ConfigError
from ohlcv.settings import load_settings

features_app = typer.Typer(no_args_is_help=True, help="Rolling features of the stored candles.")


@features_app.command("rebuild")
def rebuild_command(
    symbol: Annotated[str | None, typer.Option(help="one symbol (default: every configured SYMBOLS)")] = None,
    interval: Annotated[
        str | None, typer.Option(help="one interval (default: every ingested and resampled interval)")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option("--from", help="bars opening at or after this: epoch ms or ISO UTC (2021-03-01T12:00)"),
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="bars opening before this (exclusive), same forms")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="write the results as a JSON list to this file")
    ] = None,
) -> None:
    """Derive the feature rows of stored closed candles (history bulk-loaded without events has
    none) and write those that are missing or differ, with feature_version + 1 and reason
    rebuild: a second run writes nothing. Derivation starts at the run (no hole) holding
    --from, so the rows are exact; rows before --from are not written. With --to, rows after
    it may continue from rewritten ones: the summary says so, rebuild without --to then."""
    import time

    from rich import box
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from ohlcv.cli_args import time_bounds
    from ohlcv.infra.clickhouse import make_client, migrate
    from schemas.intervals import BINANCE_INTERVALS
    from streams.continuity import iso_ms
    from topologies.feature_rebuild import RebuildResult, rebuild_features

    start_ms, end_ms = time_bounds(start, end, empty="nothing to rebuild")
    if interval is not None and interval not in BINANCE_INTERVALS:
        raise ConfigError(
            f"--interval {interval!r} is not a Binance interval, use one of {','.join(BINANCE_INTERVALS)}"
        )
    settings = load_settings()
    symbols = [symbol.upper()] if symbol else list(settings.symbols)
    intervals = [interval] if interval else settings.all_intervals
    streams = [(s, i) for s in symbols for i in intervals]
    client = make_client(settings.clickhouse_dsn)
    results: list[RebuildResult] = []
    started = time.perf_counter()
    try:
        migrate(client)
        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("bars"),
            TimeElapsedColumn(), console=Console(stderr=True),
        )  # fmt: skip
        with progress:
            for s, i in streams:
                task = progress.add_task(f"rebuild {s} {i}", total=None)

                def advance(done: int, total: int, task: Any = task) -> None:
                    progress.update(task, completed=done, total=total)

                r = rebuild_features(client, s, i, start_ms=start_ms, end_ms=end_ms, progress=advance)
                progress.update(task, completed=r.derived, total=r.derived)
                results.append(r)
    finally:
        client.close()
    table = Table(title="feature rebuild", box=box.SIMPLE_HEAD, pad_edge=False, padding=0)
    for col in ("symbol", "iv", "bars", "written", "missing", "unchanged", "seconds"):
        table.add_column(col, justify="left" if col in ("symbol", "iv") else "right", no_wrap=True)
    for r in results:
        table.add_row(
            r.symbol, r.interval, f"{r.in_range:,}", f"{r.written:,}", f"{r.missing:,}",
            f"{r.in_range - r.written:,}", f"{r.seconds:.1f}",
        )  # fmt: skip
    Console().print(table)
    elapsed = time.perf_counter() - started
    derived = sum(r.derived for r in results)
    typer.echo(
        f"rebuilt {len(results)} stream(s): {sum(r.written for r in results):,} row(s) written of "
        f"{sum(r.in_range for r in results):,} bar(s); {derived:,} bar(s) derived in {elapsed:.1f}s"
    )
    # the span of each stream, one plain line each (never cut by the terminal's width)
    for r in results:
        if r.from_open_time is not None and r.to_open_time is not None and r.derived_from is not None:
            typer.echo(
                f"span {r.symbol} {r.interval}  {iso_ms(r.from_open_time)} .. {iso_ms(r.to_open_time)}"
                f"  derived from {iso_ms(r.derived_from)} ({r.derived:,} bars)"
            )
    for r in results:
        if r.in_range == 0:
            typer.echo(f"note: {r.symbol} {r.interval} has no stored closed candle in the range", err=True)
        if r.newer_may_be_stale:
            typer.echo(
                f"note: {r.symbol} {r.interval}: rows after --to continue from rewritten ones; "
                "rebuild without --to to bring them up to date",
                err=True,
            )
    if json_path is not None:
        json_path.write_text(json.dumps([r.to_json() for r in results], indent=2))
        typer.echo(f"wrote {len(results)} result(s) to {json_path}")
