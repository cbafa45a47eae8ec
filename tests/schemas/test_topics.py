"""The topic registry: explicit configs for every topic, and the exported JSON Schemas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from schemas.events import CandleOut, DeadLetter, PartialUpdate, candle_out
from schemas.klines import Candle, raw_batch, raw_from_candle
from schemas.topics import ALL_TOPICS, CANDLE_EVENTS, DEAD_LETTER, RAW_KLINES, topic_by_name

OHLCV = Path(sys.executable).parent / "ohlcv"


def test_topic_names_are_unique_and_resolvable() -> None:
    names = [t.name for t in ALL_TOPICS]
    assert len(set(names)) == len(names)
    for name in names:
        assert topic_by_name(name).name == name
    with pytest.raises(KeyError, match="unknown topic 'nope'"):
        topic_by_name("nope")


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=lambda t: t.name)
def test_every_topic_has_explicit_retention(spec: object) -> None:
    from schemas.topics import TopicSpec

    assert isinstance(spec, TopicSpec)
    config = spec.config()
    # the embedded broker reports no defaults, so both must always be set, as integers
    assert int(config["retention.ms"]) == spec.retention_ms > 0
    assert int(config["retention.bytes"]) == spec.retention_bytes
    assert config["cleanup.policy"] in {"delete", "compact", "compact,delete"}
    assert spec.partitions >= 1
    assert all(isinstance(v, str) for v in config.values())


def test_dead_letters_are_kept_longer_than_raw_klines() -> None:
    assert DEAD_LETTER.retention_ms > RAW_KLINES.retention_ms


def _export(tmp_path: Path) -> dict[str, dict[str, object]]:
    out = tmp_path / "schemas"
    proc = subprocess.run(
        [str(OHLCV), "topics", "schemas", str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "DATA_DIR": str(tmp_path / "data")},
    )
    assert proc.returncode == 0, proc.stderr
    files = sorted(out.iterdir())
    assert [p.name for p in files] == sorted(f"{t.name}.schema.json" for t in ALL_TOPICS)
    assert proc.stdout.split() == [str(out / f"{t.name}.schema.json") for t in ALL_TOPICS]
    return {p.name.removesuffix(".schema.json"): json.loads(p.read_text()) for p in files}


def test_schema_export_writes_one_valid_json_schema_per_topic(tmp_path: Path) -> None:
    exported = _export(tmp_path)
    for name, schema in exported.items():
        Draft202012Validator.check_schema(schema)
        assert schema["title"] and schema["description"]
        value_schema = topic_by_name(name).value_schema
        documented = ("title", "description")
        assert {k: v for k, v in schema.items() if k not in documented} == {
            k: v for k, v in value_schema.items() if k not in documented
        }


def test_exported_schemas_accept_real_payloads_and_refuse_broken_ones(tmp_path: Path) -> None:
    exported = _export(tmp_path)
    candle = Candle(
        symbol="BTCUSDT", interval="1m", open_time=1_700_000_040_000, close_time=1_700_000_099_999,
        open=37000.1, high=37010.0, low=36990.5, close=37005.25, volume=12.5, quote_volume=462_500.0,
        trades=321, taker_buy_base=6.0, taker_buy_quote=222_000.0, is_closed=False,
    )  # fmt: skip
    raw = Draft202012Validator(exported[RAW_KLINES.name])
    good_raw = raw_from_candle(candle, source="rest", received_at=1_700_000_100_000)
    assert list(raw.iter_errors(good_raw)) == []
    assert list(raw.iter_errors({"source": "ws", "event": {}}))  # received_at missing

    events = Draft202012Validator(exported[CANDLE_EVENTS.name])
    event = PartialUpdate(
        symbol="BTCUSDT",
        interval="1m",
        seq=1,
        emitted_at=1_700_000_050_000,
        candle=CandleOut.model_validate(candle_out(candle)),
    ).model_dump(mode="json")
    assert list(events.iter_errors(event)) == []
    assert list(events.iter_errors({**event, "type": "no_such_event"}))
    assert list(events.iter_errors({**event, "seq": 0}))

    dead = Draft202012Validator(exported[DEAD_LETTER.name])
    letter = DeadLetter(reason="bad json", source="binance.kline.raw[0]@7", stage="parse", payload="{", at=1)
    assert list(dead.iter_errors(letter.model_dump(mode="json"))) == []
    assert list(dead.iter_errors({"reason": "x"}))


def test_exported_raw_schema_accepts_a_batch_record(tmp_path: Path) -> None:
    raw = Draft202012Validator(_export(tmp_path)[RAW_KLINES.name])
    c = Candle(
        symbol="BTCUSDT", interval="1m", open_time=1_700_000_040_000, close_time=1_700_000_099_999,
        open=37000.1, high=37010.0, low=36990.5, close=37005.25, volume=12.5, quote_volume=None,
        trades=None, taker_buy_base=None, taker_buy_quote=None, is_closed=True,
    )  # fmt: skip
    batch = raw_batch([c, replace(c, open_time=c.open_time + 60_000, close_time=c.close_time + 60_000)],
                      source="rest", received_at=1_700_000_200_000)  # fmt: skip
    assert list(raw.iter_errors(batch)) == []
    assert list(raw.iter_errors({**batch, "klines": []}))  # a batch holds at least one row
