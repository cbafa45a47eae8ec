"""``ohlcv train`` and ``ohlcv models list|promote|rollback|recommend``: the training job and the
registry (``training.train``, ``registry``) from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ohlcv.errors import ConfigError
from ohlcv.settings import Settings, load_settings

models_app = typer.Typer(no_args_is_help=True, help="The model registry: list, promote, roll back.")

_SYMBOL = Annotated[str, typer.Option(help="the stream's symbol, e.g. XRPUSDT")]
_INTERVAL = Annotated[str, typer.Option(help="the stream's interval, e.g. 1m")]


def _stream(settings: Settings, symbol: str, interval: str) -> tuple[str, str]:
    s = symbol.upper()
    if not settings.serves(s, interval):
        raise ConfigError(
            f"{s} {interval} is not a served stream (SYMBOLS={','.join(settings.symbols)}, "
            f"intervals {','.join(settings.all_intervals)})"
        )
    return s, interval


def _rules(settings: Settings) -> Any:
    from registry.promotion import PromotionRules

    return PromotionRules.from_settings(settings)


def _fmt(x: Any, nd: int = 4) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def train_command(
    symbol: _SYMBOL,
    interval: _INTERVAL,
    start: Annotated[
        str | None, typer.Option("--from", help="rows opening at or after this: epoch ms or ISO UTC")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="rows opening before this (exclusive), same forms")
    ] = None,
    iterations: Annotated[int, typer.Option(min=1, max=100_000, help="CatBoost iterations")] = 300,
    include_incomplete: Annotated[
        bool, typer.Option(help="also train on rows whose window had a gap (window_complete=false)")
    ] = False,
    news: Annotated[
        bool, typer.Option(help="also take the news columns (news_sentiment, news_count) as inputs")
    ] = False,
    promote: Annotated[
        bool, typer.Option(help="promote the model when the promotion rules recommend it")
    ] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="write the model's record to this file")
    ] = None,
) -> None:
    """Train a CatBoost model on a stream's feature rows (label: sign of the forward log return
    over LABEL_HORIZON_BARS), evaluate it on the later, purged validation rows and register it."""
    from rich import box
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from ohlcv.cli_args import time_bounds
    from ohlcv.infra.clickhouse import make_client, migrate
    from registry.promotion import recommend
    from registry.store import Registry
    from streams.continuity import iso_ms
    from training.train import TrainConfig, train_model

    start_ms, end_ms = time_bounds(start, end, empty="nothing to train on")
    settings = load_settings()
    s, i = _stream(settings, symbol, interval)
    cfg = TrainConfig(
        horizon=settings.label_horizon_bars,
        dead_zone=settings.label_dead_zone,
        include_incomplete=include_incomplete,
        news_features=news,
        threshold=settings.inference_prob_threshold,
        params={**TrainConfig().params, "iterations": iterations},
    )
    client = make_client(settings.clickhouse_dsn)
    try:
        migrate(client)
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("iterations"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        with progress:
            task = progress.add_task(f"train {s} {i}", total=iterations)
            m = train_model(
                client,
                s,
                i,
                artifact_dir=settings.artifact_dir,
                config=cfg,
                start_ms=start_ms,
                end_ms=None if end_ms is None else end_ms - 1,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        reg = Registry(client)
        prod = reg.production(s, i)
        rec = recommend(m.metrics, prod.metrics if prod else None, _rules(settings))
        promoted = False
        if promote and rec.recommended:
            reg.promote(m.model_id, kind="auto", recommended=True, reasons=rec.reasons, actor="ohlcv train")
            promoted = True
    finally:
        client.close()
    table = Table(title=f"model {m.model_id}", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("rows", "auc", "accuracy", "brier", "log loss", "ece", "mce"):
        table.add_column(col, justify="right")
    shown = [("validation", m.metrics), ("training", m.train_metrics)]
    if prod is not None:
        shown.append(("production", prod.metrics))
    for name, q in shown:
        table.add_row(
            f"{q['rows']:,} {name}",
            *(_fmt(q[k]) for k in ("auc", "accuracy")),
            _fmt(q["brier"], 5),
            *(_fmt(q[k]) for k in ("log_loss", "ece", "mce")),
        )
    Console().print(table)
    top = sorted(m.importances.items(), key=lambda kv: -kv[1])[:5]
    typer.echo(
        f"data {iso_ms(m.data_from)} .. {iso_ms(m.data_to)}; {m.train_rows:,} training and "
        f"{m.validation_rows:,} validation rows; label balance {m.label_balance:.3f}; "
        f"{m.excluded_incomplete:,} incomplete-window rows excluded; {m.train_seconds:.1f}s"
    )
    typer.echo("top features: " + ", ".join(f"{n} {v:.1f}" for n, v in top))
    typer.echo(
        f"production {prod.model_id} (validation metrics as registered)" if prod else "production: none"
    )
    verdict = "recommended" if rec.recommended else "not recommended"
    typer.echo(f"promotion: {verdict}: " + "; ".join(rec.reasons) + (" -> promoted" if promoted else ""))
    if json_path is not None:
        json_path.write_text(
            json.dumps({**m.as_dict(), "recommended": rec.recommended, "promoted": promoted}, indent=2)
        )
        typer.echo(f"wrote the model's record to {json_path}")


@models_app.command("list")
def list_command(
    symbol: Annotated[str | None, typer.Option(help="only this symbol")] = None,
    interval: Annotated[str | None, typer.Option(help="only this interval")] = None,
) -> None:
    """Registered models, newest first, with their validation metrics; * marks production."""
    from ohlcv.infra.clickhouse import make_client, migrate
    from registry.store import Registry
    from streams.continuity import iso_ms

    settings = load_settings()
    client = make_client(settings.clickhouse_dsn)
    try:
        migrate(client)
        reg = Registry(client)
        models = reg.models(symbol.upper() if symbol else None, interval)
        prod = set(reg.productions().values())
    finally:
        client.close()
    if not models:
        typer.echo("no models registered (train one: ohlcv train --symbol S --interval I)")
        return
    # plain lines: a model id is never cut by the terminal's width
    typer.echo(
        f"  {'model':<34} {'created':<20} {'train rows':>10} {'auc':>7} {'brier':>8} {'ece':>7}  trigger"
    )
    for m in models:
        q = m.metrics
        typer.echo(
            f"{'*' if m.model_id in prod else ' '} {m.model_id:<34} {iso_ms(m.created_at):<20} "
            f"{m.train_rows:>10,} {_fmt(q['auc']):>7} {_fmt(q['brier'], 5):>8} {_fmt(q['ece']):>7}  "
            f"{m.trigger}"
        )
    typer.echo("* production")


def _registry_action(action: str, **kw: Any) -> dict[str, Any]:
    from ohlcv.infra.clickhouse import make_client, migrate
    from registry.store import Registry

    settings = load_settings()
    client = make_client(settings.clickhouse_dsn)
    try:
        migrate(client)
        reg = Registry(client)
        if action == "promote":
            return reg.promote(kw["model_id"], actor="ohlcv models promote")
        s, i = _stream(settings, kw["symbol"], kw["interval"])
        return reg.rollback(s, i, actor="ohlcv models rollback")
    finally:
        client.close()


@models_app.command("promote")
def promote_command(model_id: Annotated[str, typer.Argument(help="the model to make production")]) -> None:
    """Make a model production for its stream (manual: the rules are not applied)."""
    ev = _registry_action("promote", model_id=model_id)
    typer.echo(
        f"{ev['symbol']} {ev['interval']}: production {ev['from_model_id'] or '(none)'} "
        f"-> {ev['to_model_id']}"
    )


@models_app.command("rollback")
def rollback_command(symbol: _SYMBOL, interval: _INTERVAL) -> None:
    """Make the model that was production before the current one production again."""
    ev = _registry_action("rollback", symbol=symbol, interval=interval)
    typer.echo(f"{ev['symbol']} {ev['interval']}: rolled back {ev['from_model_id']} -> {ev['to_model_id']}")
