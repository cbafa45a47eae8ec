"""One risk-topology process for the kill -9 test; run as ``sys.executable -m``.

``run`` migrates its chDB path (and on the first run loads the real candles and scores, and a
limits change), then runs the real risk topology (``build_risk_application``) until it has been
idle for ``--idle-s``. After every sink write it prints ``written records=N``.
``--die-on-write K`` makes it kill itself with SIGKILL in the K-th write that holds fills, right
after its ``risk_fills`` insert and before ``risk_positions`` and ``risk_state``: a crash between
two tables of one checkpoint.

``check`` prints one JSON line: the stream's fills, curve and decision counts, and the batch
backtest's, for the test to compare. chDB lets one OS process own a data path.
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
from risk.backtest import backtest
from risk.store import put_limits
from sinks import risk as risk_sink
from sinks.clickhouse_bulk import insert_candles
from sinks.scores import write_scores
from tests.risk.data import EQUITY, LIMITS, outage_span, rule_scores
from topologies.runner import TopologyConfig, build_risk_application


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _hook(die_on_write: int) -> None:
    real = risk_sink.RiskRows.write
    seen = {"records": 0, "with_fills": 0}

    def write(self: risk_sink.RiskRows, client: Any) -> None:
        if self.tables["risk_fills"][1]:
            seen["with_fills"] += 1
            if seen["with_fills"] == die_on_write:
                real_insert = client.insert

                def insert(table: str, *args: Any, **kwargs: Any) -> Any:
                    out = real_insert(table, *args, **kwargs)
                    if table == "risk_fills":
                        rows = self.tables["risk_fills"][1]
                        killed = {"opens": [row[2] for row in rows], "at": rows[0][-1]}
                        _say(f"dying after risk_fills {json.dumps(killed)}")
                        os.kill(os.getpid(), signal.SIGKILL)
                    return out

                client.insert = insert
        real(self, client)
        seen["records"] += self.count
        _say(f"written records={seen['records']}")

    risk_sink.RiskRows.write = write  # type: ignore[method-assign]


def run(a: argparse.Namespace) -> None:
    url = f"chdb://{a.ch}"
    client = make_client(url, "ohlcv")
    migrate(client)
    if not client.query("SELECT count() FROM model_inference_log").result_rows[0][0]:
        cs = outage_span()
        insert_candles(client, cs)
        scores = rule_scores(cs)
        write_scores(client, scores)
        mid = scores[len(scores) // 2]["open_time"]
        put_limits(client, LIMITS.model_copy(update={"max_position_notional": 2_500}), mid)
    _hook(a.die_on_write)
    cfg = TopologyConfig(
        broker_address=a.broker, clickhouse_url=url, clickhouse_database="ohlcv", consumer_group=a.group,
        state_dir=Path(a.state), scores_topic=a.scores, risk_events_topic=a.events, risk=True,
        risk_limits=LIMITS, risk_initial_equity=EQUITY, risk_limits_poll_s=0.0, commit_interval_s=0.05,
    )  # fmt: skip
    _say("starting")
    build_risk_application(cfg).run(timeout=a.idle_s)
    _say("idle, stopped")


def check(a: argparse.Namespace) -> None:
    c = make_client(f"chdb://{a.ch}", "ohlcv")
    ref = backtest(
        c, "XRPUSDT", "1m", start_ms=None, end_ms=None, initial_equity=EQUITY, default_limits=LIMITS
    )
    out = {
        "fills": c.query("SELECT toUnixTimestamp64Milli(open_time), side, qty, price, fee, cash_after, "
                         "toUnixTimestamp64Milli(at) FROM risk_fills FINAL ORDER BY open_time").result_rows,
        "curve": c.query("SELECT toUnixTimestamp64Milli(open_time), equity FROM risk_state FINAL "
                         "ORDER BY open_time").result_rows,
        "decisions": dict(c.query("SELECT outcome, count() FROM risk_decisions FINAL "
                                  "GROUP BY outcome").result_rows),
        "ref_fills": [[f["open_time"], f["side"], f["qty"], f["price"], f["fee"], f["cash_after"]]
                      for f in ref.fills],
        "ref_curve": [[int(t), e] for t, e in zip(ref.curve["open_time"], ref.curve["equity"], strict=True)],
        "ref_decisions": ref.decisions,
    }  # fmt: skip
    _say(json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(prog="risk_worker")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    for name in ("--broker", "--ch", "--group", "--state", "--scores", "--events"):
        r.add_argument(name, required=True)
    r.add_argument("--idle-s", type=float, default=4.0)
    r.add_argument("--die-on-write", type=int, default=0)
    q = sub.add_parser("check")
    q.add_argument("--ch", required=True)
    a = p.parse_args()
    {"run": run, "check": check}[a.cmd](a)


if __name__ == "__main__":
    main()
