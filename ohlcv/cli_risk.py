"""``ohlcv backtest``: the batch backtest (``risk.backtest``) of one stream's stored scores and
candles (or, with ``--with``, several streams as one account), with a progress bar and a
summary table."""

from __future__ import annotations

from typing import Annotated

import typer

from ohlcv.cli_models import _INTERVAL, _SYMBOL, _stream
from ohlcv.settings import load_settings


def backtest_command(
    symbol: _SYMBOL,
    interval: _INTERVAL,
    start: Annotated[
        str | None, typer.Option("--from", help="bars opening at or after this: epoch ms or ISO UTC")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="bars opening before this (exclusive), same forms")
    ] = None,
    also: Annotated[
        list[str] | None,
        typer.Option("--with", help="another symbol (same interval) traded in the same account; repeatable"),
    ] = None,
) -> None:
    """Replay the risk rules over the stream's stored scores and candles (RISK_* limits, and the
    changes in risk_limits): trades, return, max drawdown, Sharpe, fees. The same result as the
    risk topology's books over the same rows; with --with, the books share the account's
    RISK_MAX_TOTAL_EXPOSURE as they do in the topology."""
    from rich import box
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from ohlcv.cli_args import time_bounds
    from ohlcv.errors import OhlcvError
    from ohlcv.infra.clickhouse import make_client, migrate
    from risk.backtest import backtest_account
    from risk.store import default_limits

    start_ms, end_ms = time_bounds(start, end, empty="nothing to backtest")
    settings = load_settings()
    s, i = _stream(settings, symbol, interval)
    streams = [(s, i)] + [_stream(settings, o, interval) for o in (also or [])]
    streams = list(dict.fromkeys(streams))
    client = make_client(settings.clickhouse_dsn)
    try:
        migrate(client)
        cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("bars"),
                TimeElapsedColumn())  # fmt: skip
        bar = Progress(*cols, console=Console(stderr=True))
        with bar:
            task = bar.add_task(f"backtest {' '.join(x for x, _ in streams)} {i}", total=None)
            results = backtest_account(
                client, streams, start_ms=start_ms, end_ms=end_ms,
                initial_equity=settings.risk_initial_equity, default_limits=default_limits(settings),
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip
            done = sum(r.bars for r in results.values())
            bar.update(task, completed=done, total=done)
    finally:
        client.close()
    empty = [k for k, r in results.items() if not r.bars]
    if empty:
        raise OhlcvError(
            f"no scored bars for {', '.join(e.replace(':', ' ') for e in empty)} in the range "
            "(is a production model scoring it?)"
        )
    title = f"backtest {i}" + (" (one account)" if len(streams) > 1 else "")
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("stream")
    for col in ("bars", "trades", "return %", "max drawdown %", "sharpe", "fees", "final equity"):
        table.add_column(col, justify="right")
    for key, r in results.items():
        q = r.summary
        sharpe = "-" if q["sharpe"] is None else f"{q['sharpe']:.2f}"
        table.add_row(key.replace(":", " "), f"{q['bars']:,}", f"{q['trades']:,}", f"{q['return_pct']:.3f}",
                      f"{q['max_drawdown_pct']:.3f}", sharpe, f"{q['fees']:,.2f}",
                      f"{q['final_equity']:,.2f}")  # fmt: skip
    Console().print(table)
    for key, r in results.items():
        q = r.summary
        line = ", ".join(f"{k} {v:,}" for k, v in q["decisions"].items())
        if q["refused_total_exposure"]:
            line += f" (max_total_exposure refused {q['refused_total_exposure']:,})"
        typer.echo(f"decisions {key.replace(':', ' ')}: {line}")
