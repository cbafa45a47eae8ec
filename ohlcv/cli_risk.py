"""``ohlcv backtest``: the batch backtest (``risk.backtest``) of one stream's stored scores and
candles, with a progress bar and a summary table."""

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
) -> None:
    """Replay the risk rules over the stream's stored scores and candles (RISK_* limits, and the
    changes in risk_limits): trades, return, max drawdown, Sharpe, fees. The same result as the
    risk topology's books over the same rows."""
    from rich import box
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from ohlcv.cli_args import time_bounds
    from ohlcv.errors import OhlcvError
    from ohlcv.infra.clickhouse import make_client, migrate
    from risk.backtest import backtest
    from risk.store import default_limits

    start_ms, end_ms = time_bounds(start, end, empty="nothing to backtest")
    settings = load_settings()
    s, i = _stream(settings, symbol, interval)
    client = make_client(settings.clickhouse_dsn)
    try:
        migrate(client)
        cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("bars"),
                TimeElapsedColumn())  # fmt: skip
        bar = Progress(*cols, console=Console(stderr=True))
        with bar:
            task = bar.add_task(f"backtest {s} {i}", total=None)
            r = backtest(
                client, s, i, start_ms=start_ms, end_ms=end_ms, initial_equity=settings.risk_initial_equity,
                default_limits=default_limits(settings),
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip
            bar.update(task, completed=r.bars, total=r.bars)
    finally:
        client.close()
    if not r.bars:
        raise OhlcvError(f"no scored bars for {s} {i} in the range (is a production model scoring it?)")
    q = r.summary
    table = Table(title=f"backtest {s} {i}", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("bars", "trades", "return %", "max drawdown %", "sharpe", "fees", "final equity"):
        table.add_column(col, justify="right")
    sharpe = "-" if q["sharpe"] is None else f"{q['sharpe']:.2f}"
    table.add_row(f"{q['bars']:,}", f"{q['trades']:,}", f"{q['return_pct']:.3f}",
                  f"{q['max_drawdown_pct']:.3f}", sharpe, f"{q['fees']:,.2f}",
                  f"{q['final_equity']:,.2f}")  # fmt: skip
    Console().print(table)
    typer.echo("decisions: " + ", ".join(f"{k} {v:,}" for k, v in q["decisions"].items()))
