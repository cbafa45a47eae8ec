"""``ohlcv train`` and ``ohlcv models`` run as a user runs them, on the real XRP dump bulk-imported
and rebuilt into feature rows once for the module."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.ohlcv.test_cli_scan import Cli
from tests.streams.test_continuity import XRP_JSON

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    run = Cli(tmp_path_factory.mktemp("models"))
    for args in (("import", str(XRP_JSON), "--mode", "bulk"), ("features", "rebuild", "--interval", "1m")):
        done = run(*args)
        assert done.returncode == 0, done.stderr
    return run


def test_train_shows_progress_and_a_summary_then_promote_and_rollback(cli: Cli) -> None:
    out = cli.root / "model.json"
    first = cli(
        "train",
        "--symbol",
        "xrpusdt",
        "--interval",
        "1m",
        "--iterations",
        "30",
        "--promote",
        "--json",
        str(out),
    )
    assert first.returncode == 0, first.stderr
    m = json.loads(out.read_text())
    assert "train XRPUSDT 1m" in first.stderr and "30/30" in first.stderr  # the progress bar
    assert f"model {m['model_id']}" in first.stdout and "validation" in first.stdout
    assert "promotion: recommended: no production model for the stream -> promoted" in first.stdout
    assert (
        Path(m["artifact_path"]).is_file() and Path(m["artifact_path"]).parent == cli.root / "data" / "models"
    )
    assert m["validation_rows"] > 10_000 and m["excluded_incomplete"] > 0
    # a second model over April only; not promoted without --promote, the table shows production
    second = cli(
        "train",
        "--symbol",
        "XRPUSDT",
        "--interval",
        "1m",
        "--iterations",
        "30",
        "--from",
        "2021-04-02",
        "--to",
        "2021-05-01",
        "--json",
        str(out),
    )
    assert second.returncode == 0, second.stderr
    m2 = json.loads(out.read_text())
    assert m2["data_to"] < 1619827200000 and m2["parent_model_id"] == m["model_id"] and not m2["promoted"]
    assert f"production {m['model_id']}" in second.stdout
    listed = cli("models", "list")
    assert listed.returncode == 0 and m["model_id"] in listed.stdout and m2["model_id"] in listed.stdout
    promoted = cli("models", "promote", m2["model_id"])
    assert f"production {m['model_id']} -> {m2['model_id']}" in promoted.stdout, promoted.stderr
    back = cli("models", "rollback", "--symbol", "XRPUSDT", "--interval", "1m")
    assert f"rolled back {m2['model_id']} -> {m['model_id']}" in back.stdout, back.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("train", "--symbol", "BTCUSDT", "--interval", "1m"), "BTCUSDT 1m is not a served stream"),
        (("train", "--symbol", "XRPUSDT", "--interval", "5m"), "no feature rows for XRPUSDT 5m"),
        (("train", "--symbol", "XRPUSDT", "--interval", "1m", "--from", "2030-01-01"), "no feature rows"),
        (("models", "promote", "XRPUSDT-1m-v99-x"), "unknown model 'XRPUSDT-1m-v99-x'"),
        (("backtest", "--symbol", "XRPUSDT", "--interval", "1m"), "no scored bars for XRPUSDT 1m"),
        (("backtest", "--symbol", "BTCUSDT", "--interval", "1m"), "BTCUSDT 1m is not a served stream"),
        (
            ("backtest", "--symbol", "XRPUSDT", "--interval", "1m", "--with", "ETHUSDT"),
            "ETHUSDT 1m is not a served stream",
        ),
    ],
)
def test_bad_requests_are_one_clear_line(cli: Cli, args: tuple[str, ...], message: str) -> None:
    done = cli(*args)
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr
