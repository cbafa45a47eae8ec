"""Settings from the environment: list and single-value names, normalisation, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ohlcv.errors import ConfigError
from ohlcv.settings import Settings, load_settings


@pytest.fixture
def env(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No setting of ours in the environment (every field, not only the common prefixes)."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def _error(monkeypatch: pytest.MonkeyPatch, **values: str) -> str:
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_serve_one_stream_and_resample_from_1m(env: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.symbols == ["XRPUSDT"]
    assert s.intervals == ["1m"]
    assert s.resample_intervals == ["5m", "15m", "1h", "4h", "1d"]
    assert s.all_intervals == ["1m", "5m", "15m", "1h", "4h", "1d"]
    assert s.embedded_broker is True
    assert s.clickhouse_dsn == f"chdb://{(Path('.data') / 'clickhouse').resolve()}"


def test_comma_lists_are_split_trimmed_and_symbols_upper_cased(env: pytest.MonkeyPatch) -> None:
    env.setenv("SYMBOLS", " btcusdt, EthUsdt ,,XRPUSDT ")
    env.setenv("INTERVALS", "1m, 1h")
    s = load_settings()
    assert s.symbols == ["BTCUSDT", "ETHUSDT", "XRPUSDT"]
    assert s.intervals == ["1m", "1h"]
    # the default resample set leaves out what is ingested
    assert s.resample_intervals == ["5m", "15m", "4h", "1d"]
    assert s.serves("ETHUSDT", "4h") and not s.serves("ETHUSDT", "3m")


def test_single_symbol_and_interval_still_work(env: pytest.MonkeyPatch) -> None:
    env.setenv("SYMBOL", "btcusdt")
    env.setenv("INTERVAL", "5m")
    s = load_settings()
    assert s.symbols == ["BTCUSDT"]
    assert s.intervals == ["5m"]
    # nothing to resample from without 1m, so the default set is empty instead of an error
    assert s.resample_intervals == []


def test_list_form_wins_over_single_value(env: pytest.MonkeyPatch) -> None:
    env.setenv("SYMBOL", "BTCUSDT")
    env.setenv("SYMBOLS", "ETHUSDT,SOLUSDT")
    env.setenv("INTERVAL", "5m")
    env.setenv("INTERVALS", "1m")
    s = load_settings()
    assert s.symbols == ["ETHUSDT", "SOLUSDT"]
    assert s.intervals == ["1m"]


@pytest.mark.parametrize(
    ("values", "variable"),
    [
        ({"INTERVALS": "1m,7m"}, "INTERVALS"),
        ({"INTERVAL": "2d"}, "INTERVAL"),
        ({"RESAMPLE_INTERVALS": "5m,1M"}, "RESAMPLE_INTERVALS"),
        ({"SYMBOLS": "BTCUSDT,BTC-USDT"}, "SYMBOLS"),
        ({"SYMBOL": "x"}, "SYMBOL"),
        ({"SYMBOLS": " , "}, "SYMBOLS"),
        ({"API_PORT": "http"}, "API_PORT"),
        ({"API_PORT": "70000"}, "API_PORT"),
        ({"CLICKHOUSE_URL": "postgres://db:5432/x"}, "CLICKHOUSE_URL"),
        ({"KAFKA_BROKER_ADDRESS": "kafka"}, "KAFKA_BROKER_ADDRESS"),
        ({"PROCESSING_GUARANTEE": "maybe-once"}, "PROCESSING_GUARANTEE"),
        ({"CONTINUITY_WINDOWS_DAYS": "1,abc"}, "CONTINUITY_WINDOWS_DAYS"),
        ({"CONTINUITY_WINDOWS_DAYS": "30,0"}, "CONTINUITY_WINDOWS_DAYS"),
    ],
)
def test_invalid_value_names_the_variable(
    env: pytest.MonkeyPatch, values: dict[str, str], variable: str
) -> None:
    message = _error(env, **values)
    assert message.startswith("invalid settings: ")
    assert f"{variable}:" in message
    offending = next(iter(values.values())).split(",")[-1].strip()
    if offending:
        assert offending.upper() in message.upper()


def test_continuity_windows_are_whole_days(env: pytest.MonkeyPatch) -> None:
    assert load_settings().continuity_windows_days == [1, 30, 365]
    env.setenv("CONTINUITY_WINDOWS_DAYS", " 7, 90 ,1825")
    assert load_settings().continuity_windows_days == [7, 90, 1825]


def test_continuity_window_all_is_the_whole_stored_span(env: pytest.MonkeyPatch) -> None:
    env.setenv("CONTINUITY_WINDOWS_DAYS", "1, 30,ALL")
    assert load_settings().continuity_windows_days == [1, 30, "all"]
    env.setenv("CONTINUITY_WINDOWS_DAYS", "all")
    assert load_settings().continuity_windows_days == ["all"]
    message = _error(env, CONTINUITY_WINDOWS_DAYS="1,al")
    assert message == (
        "invalid settings: CONTINUITY_WINDOWS_DAYS: 'al' is neither a whole number of days >= 1 "
        "nor 'all' (got '1,al')"
    )


def test_invalid_interval_lists_what_binance_serves(env: pytest.MonkeyPatch) -> None:
    message = _error(env, INTERVALS="7m")
    assert "'7m'" in message
    assert "1s,1m,3m,5m" in message


def test_invalid_clickhouse_url_masks_the_password(env: pytest.MonkeyPatch) -> None:
    message = _error(env, CLICKHOUSE_URL="ftp://ohlcv:s3cret-pw@db:21/x")
    assert "CLICKHOUSE_URL" in message
    assert "s3cret-pw" not in message
    assert "ohlcv:***@db" in message


def test_explicit_resample_set_is_checked_as_given(env: pytest.MonkeyPatch) -> None:
    assert "overlap" in _error(env, INTERVALS="1m,5m", RESAMPLE_INTERVALS="5m,1h")
    env.delenv("RESAMPLE_INTERVALS")
    assert "needs 1m" in _error(env, INTERVALS="5m", RESAMPLE_INTERVALS="1h")


def test_dotenv_in_working_directory_is_read(env: pytest.MonkeyPatch, clean_env: Path) -> None:
    (clean_env / ".env").write_text("SYMBOLS=solusdt\nAPI_PORT=8123\nAPI_KEY=from-dotenv\n")
    s = load_settings()
    assert s.symbols == ["SOLUSDT"]
    assert s.api_port == 8123
    assert s.api_key.get_secret_value() == "from-dotenv"
    assert "from-dotenv" not in repr(s)


def test_settings_are_frozen(env: pytest.MonkeyPatch) -> None:
    s = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        s.api_port = 1
