"""One candle-topology process for the crash-recovery tests; run as ``sys.executable -m``.

``run`` migrates the chDB database, then runs the real topology
(``build_application(TopologyConfig(...)).run``) until it has been idle for ``--idle-s``. After
every sink write it prints ``written candles=N segments=N events=N`` (running totals of rows;
``written features=N`` for the features sink, with ``--features``) to stdout, so the test can
kill it while it works. ``--die-after-inserts K`` makes it kill itself
with SIGKILL right after the K-th table insert of the first sink batch that carries a gap
segment row: a crash in the middle of one batch's write, between two tables.

``query`` runs SQL statements on the database and prints one JSON line: the result rows of
each. chDB lets one OS process own a data path, so the test reads results through this command
while it has its own chDB path open.

The hooks wrap ``sinks.clickhouse.Rows.write`` in this process only; no project code changes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ohlcv.infra.clickhouse import make_client, migrate
from schemas.topics import CANDLE_EVENTS, DEAD_LETTER, FEATURES, RAW_KLINES
from sinks import clickhouse as sink_module
from sinks import features as feature_sink_module
from topologies.runner import TopologyConfig, build_application


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _hook_sink(die_after_inserts: int) -> None:
    real_write = sink_module.Rows.write
    totals = {"candles": 0, "segments": 0, "events": 0}

    def write(self: sink_module.Rows, client: Any) -> None:
        if die_after_inserts and self.segments:
            done: list[str] = []

            def dying(real_insert: Any) -> Any:
                def insert_then_maybe_die(table: str, *args: Any, **kwargs: Any) -> Any:
                    result = real_insert(table, *args, **kwargs)
                    done.append(table)
                    if len(done) == die_after_inserts:
                        _say(f"dying after inserts={','.join(done)}")
                        os.kill(os.getpid(), signal.SIGKILL)
                    return result

                return insert_then_maybe_die

            # row inserts (segments) and Arrow inserts (candles, events) alike
            client.insert = dying(client.insert)
            client.insert_arrow = dying(client.insert_arrow)
        real_write(self, client)
        totals["candles"] += self.candle_count
        totals["segments"] += len(self.segments)
        totals["events"] += len(self.events)
        _say("written " + " ".join(f"{k}={v}" for k, v in totals.items()))

    sink_module.Rows.write = write  # type: ignore[method-assign]

    real_feature_write = feature_sink_module.FeatureRows.write
    features = {"features": 0}

    def write_features(self: feature_sink_module.FeatureRows, client: Any) -> None:
        real_feature_write(self, client)
        features["features"] += self.count
        _say(f"written features={features['features']}")

    feature_sink_module.FeatureRows.write = write_features  # type: ignore[method-assign]


def run(a: argparse.Namespace) -> None:
    url = f"chdb://{a.ch}"
    migrate(make_client(url, a.db))
    _hook_sink(a.die_after_inserts)
    cfg = TopologyConfig(
        broker_address=a.broker, clickhouse_url=url, clickhouse_database=a.db, consumer_group=a.group,
        state_dir=Path(a.state), embedded_broker=True, resample_intervals=tuple(a.resample),
        raw_topic=a.prefix + RAW_KLINES.name, events_topic=a.prefix + CANDLE_EVENTS.name,
        deadletter_topic=a.prefix + DEAD_LETTER.name, commit_interval_s=a.commit_interval_s,
        features=a.features, features_topic=a.prefix + FEATURES.name,
    )  # fmt: skip
    _say("starting")
    build_application(cfg).run(timeout=a.idle_s, collect=False)
    _say("idle, stopped")


def query(a: argparse.Namespace) -> None:
    client = make_client(f"chdb://{a.ch}", a.db)
    _say(json.dumps([client.query(sql).result_rows for sql in a.sql], default=str))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="crash_worker")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--broker", required=True)
    r.add_argument("--ch", required=True, help="chDB data path this process owns while it runs")
    r.add_argument("--db", required=True)
    r.add_argument("--group", required=True)
    r.add_argument("--state", required=True)
    r.add_argument("--prefix", required=True, help="topic name prefix")
    r.add_argument("--idle-s", type=float, default=6.0)
    r.add_argument("--resample", nargs="*", default=["5m"])
    r.add_argument("--die-after-inserts", type=int, default=0)
    r.add_argument("--commit-interval-s", type=float, default=1.0)
    r.add_argument("--features", action="store_true", help="run the features topology too")
    q = sub.add_parser("query")
    q.add_argument("--ch", required=True)
    q.add_argument("--db", required=True)
    q.add_argument("sql", nargs="+")
    a = p.parse_args(argv)
    {"run": run, "query": query}[a.cmd](a)


if __name__ == "__main__":
    main()
