"""The risk topology on the real broker and chDB against the batch backtest (``risk.backtest``,
written apart): real XRP 1m candles (a real outage included, so some windows are incomplete),
their feature rows, scores from a fixed rule on the 5-bar return (the engine does not care which
model), a limits change half-way. Same fills, positions and equity curve to the cent; a replay
of the whole topic after the book is stored fills nothing twice."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest
from clickhouse_connect.driver.client import Client
from confluent_kafka import Producer

from ohlcv.infra.kafka import ensure_topics
from risk.backtest import backtest
from risk.store import put_limits
from schemas.topics import RISK_EVENTS, SCORES, TopicSpec
from sinks.clickhouse_bulk import insert_candles
from sinks.scores import write_scores
from tests.risk.data import EQUITY, LIMITS, outage_span, rule_scores
from topologies.runner import TopologyConfig, build_risk_application

pytestmark = [pytest.mark.broker, pytest.mark.clickhouse, pytest.mark.slow]


def _run(broker: str, ch_url: str, ch_db: str, topics: dict[str, str], group: str, state: Path) -> None:
    cfg = TopologyConfig(
        broker_address=broker, clickhouse_url=ch_url, clickhouse_database=ch_db, consumer_group=group,
        state_dir=state, scores_topic=topics["scores"], risk_events_topic=topics["events"], risk=True,
        risk_limits=LIMITS, risk_initial_equity=EQUITY, risk_limits_poll_s=0.0,
    )  # fmt: skip
    build_risk_application(cfg).run(timeout=5)


def test_stream_equals_the_backtest_to_the_cent_and_a_replay_fills_nothing_twice(
    broker: str, ch: Client, ch_url: str, ch_db: str, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}."
    topics = {"scores": prefix + SCORES.name, "events": prefix + RISK_EVENTS.name}
    ensure_topics(broker, tuple(TopicSpec(n, "", {}, "", partitions=1) for n in topics.values()))
    cs = outage_span()
    insert_candles(ch, cs)
    scores = rule_scores(cs)
    assert sum(not s["window_complete"] for s in scores) > 50  # the outage's windows
    write_scores(ch, scores)
    # tighter limits from the middle bar on, for the stream and the backtest alike
    mid = scores[len(scores) // 2]["open_time"]
    put_limits(ch, LIMITS.model_copy(update={"max_position_notional": 2_500, "cooldown_bars": 5}), mid)
    p = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    for s in scores:
        p.produce(topics["scores"], key=b"XRPUSDT:1m", value=orjson.dumps(s))
    p.flush(30)
    _run(broker, ch_url, ch_db, topics, "risk-a", tmp_path / "s1")

    ref = backtest(
        ch, "XRPUSDT", "1m", start_ms=None, end_ms=None, initial_equity=EQUITY, default_limits=LIMITS
    )
    fills = ch.query(
        "SELECT toUnixTimestamp64Milli(open_time), side, reason, qty, price, fee, cash_after, realized_pnl, "
        "toUnixTimestamp64Milli(decided_at) FROM risk_fills FINAL ORDER BY open_time"
    ).result_rows
    want = [(f["open_time"], f["side"], f["reason"], f["qty"], f["price"], f["fee"], f["cash_after"],
             f["realized_pnl"], f["decided_at"]) for f in ref.fills]  # fmt: skip
    assert len(fills) == len(want) > 20
    for got, exp in zip(fills, want, strict=True):
        assert got[:3] == exp[:3] and got[8] == exp[8]
        assert all(abs(a - b) < 0.005 for a, b in zip(got[5:8], exp[5:8], strict=True))  # fee, cash, pnl
        assert got[3] == pytest.approx(exp[3], rel=1e-12) and got[4] == pytest.approx(exp[4], rel=1e-12)
    curve = ch.query(
        "SELECT toUnixTimestamp64Milli(open_time), equity, cash, position_qty, drawdown "
        "FROM risk_state FINAL ORDER BY open_time"
    ).result_rows
    assert len(curve) == len(ref.curve) == len(scores)
    for got, exp in zip(curve, ref.curve.itertuples(index=False), strict=True):
        assert got[0] == exp.open_time and abs(got[1] - exp.equity) < 0.005 and abs(got[2] - exp.cash) < 0.005
        assert got[3] == pytest.approx(exp.qty, rel=1e-12, abs=1e-12)
    outcomes = dict(
        ch.query("SELECT outcome, count() FROM risk_decisions FINAL GROUP BY outcome").result_rows
    )
    assert outcomes == ref.decisions
    reasons = {r for (r,) in ch.query("SELECT DISTINCT reason FROM risk_decisions FINAL").result_rows}
    assert {"window_incomplete", "stop_loss", "cooldown", "model_long", "model_flat"} <= reasons
    # the position is the last fill's; the limits change shows in the fills' size
    (qty,) = ch.query("SELECT qty FROM risk_positions FINAL").result_rows[0]
    assert qty == pytest.approx(fills[-1][3] if fills[-1][1] == "buy" else 0.0)
    assert max(f[3] * f[4] for f in fills if f[1] == "buy" and f[0] > mid) < 2_500.01
    assert max(f[3] * f[4] for f in fills if f[1] == "buy" and f[0] < mid) > 2_500

    # a replay of the whole topic (another group, a fresh state dir, as after a kill -9 that lost
    # the local state): every bar is behind the stored book, nothing is filled or written again
    before = ch.query("SELECT count(), max(at) FROM risk_fills").result_rows[0]
    _run(broker, ch_url, ch_db, topics, "risk-b", tmp_path / "s2")
    assert ch.query("SELECT count(), max(at) FROM risk_fills").result_rows[0] == before
    assert ref.summary["trades"] == sum(1 for f in fills if f[1] == "sell")

    # the API over the same books
    import functools

    from fastapi.testclient import TestClient

    from api.main import create_app
    from ohlcv.infra.clickhouse import make_client
    from tests.api.conftest import AUTH, api_settings

    app = create_app(api_settings(symbols=["XRPUSDT"]), broker_address=broker,
                     clickhouse_client_factory=functools.partial(make_client, ch_url, ch_db))  # fmt: skip
    with TestClient(app) as api:
        st = api.get("/api/risk/state", headers=AUTH).json()
        (book,) = st["books"]
        assert (
            book["open_time"] == scores[-1]["open_time"]
            and abs(book["equity"] - ref.curve["equity"].iloc[-1]) < 0.005
        )
        pos = api.get("/api/risk/positions", headers=AUTH).json()
        assert [p["qty"] for p in pos] == ([fills[-1][3]] if fills[-1][1] == "buy" else [])
        page1 = api.get("/api/risk/fills", params={"limit": 10}, headers=AUTH).json()
        page2 = api.get(
            "/api/risk/fills", params={"limit": 10, "cursor": page1["next_cursor"]}, headers=AUTH
        ).json()
        got = [f["open_time"] for f in page1["fills"] + page2["fills"]]
        assert got == [f[0] for f in fills][::-1][:20]
        eq = api.get(
            "/api/risk/equity", params={"symbol": "XRPUSDT", "interval": "1m", "from": mid}, headers=AUTH
        )
        pts = eq.json()["points"]
        assert pts[0]["open_time"] == mid and len(pts) == sum(1 for s in scores if s["open_time"] >= mid)
        lim = api.get("/api/risk/limits", headers=AUTH).json()
        assert lim["effective_from"] == mid and lim["limits"]["max_position_notional"] == 2_500
        bad = api.put("/api/risk/limits", json={**lim["limits"], "max_drawdown": 1.5}, headers=AUTH)
        assert bad.status_code == 422 and "max_drawdown" in bad.text
        ok = api.put("/api/risk/limits", json={**lim["limits"], "fee_bps": 1.0}, headers=AUTH).json()
        assert api.get("/api/risk/limits", headers=AUTH).json()["effective_from"] == ok["effective_from"]
        act = api.get("/api/inference/activity/summary", headers=AUTH).json()
        # the scores were issued in 2023 (their scored_at): nothing in the last minutes
        assert (
            act["decisions_5m"] == 0
            and act["status"] == "idle"
            and act["last_decision_ts"] == scores[-1]["scored_at"]
        )
        assert api.get("/api/risk/state").status_code == 401


def test_books_share_the_account_max_total_exposure_as_the_backtest_does(
    broker: str, ch: Client, ch_url: str, ch_db: str, tmp_path: Path
) -> None:
    """Two real streams (XRP around its outage, LINK from Binance Vision) in one account whose
    max total exposure holds one full position and a half: an entry while the other book holds
    one is refused (``max_total_exposure``), the same bars as the account backtest, to the cent."""
    from risk.backtest import backtest_account
    from tests.topologies.helpers import vision_candles

    prefix = f"t{uuid.uuid4().hex[:6]}."
    topics = {"scores": prefix + SCORES.name, "events": prefix + RISK_EVENTS.name}
    ensure_topics(broker, tuple(TopicSpec(n, "", {}, "", partitions=1) for n in topics.values()))
    xrp, link = outage_span()[2500:5500], vision_candles("LINKUSDT")[:3000]
    insert_candles(ch, xrp + link)
    # issued alternately, as two streams closing bars minute by minute
    scores = rule_scores(xrp, stride=2) + rule_scores(link, issued=1_700_000_000_001, stride=2)
    scores.sort(key=lambda s: s["scored_at"])
    write_scores(ch, scores)
    limits = LIMITS.model_copy(update={"max_total_exposure": 7_500})
    put_limits(ch, limits, 0)
    p = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    for s in scores:
        p.produce(topics["scores"], key=f"{s['symbol']}:1m".encode(), value=orjson.dumps(s))
    p.flush(30)
    _run(broker, ch_url, ch_db, topics, "risk-acct", tmp_path / "s")

    streams = [("XRPUSDT", "1m"), ("LINKUSDT", "1m")]
    ref = backtest_account(
        ch, streams, start_ms=None, end_ms=None, initial_equity=EQUITY, default_limits=LIMITS
    )
    refused = dict(ch.query(
        "SELECT symbol, count() FROM risk_decisions FINAL WHERE reason = 'max_total_exposure' GROUP BY symbol"
    ).result_rows)  # fmt: skip
    assert refused == {s: r.refused_total_exposure for (s, _), r in zip(streams, ref.values(), strict=True)}
    assert len(refused) == 2 and sum(refused.values()) > 10, refused  # the limit binds on both books
    for (sym, _), r in zip(streams, ref.values(), strict=True):
        fills = ch.query(
            "SELECT toUnixTimestamp64Milli(open_time), side, qty, price, cash_after, realized_pnl "
            "FROM risk_fills FINAL WHERE symbol = {s:String} ORDER BY open_time",
            parameters={"s": sym},
        ).result_rows
        assert len(fills) == len(r.fills) > 10
        for got, exp in zip(fills, r.fills, strict=True):
            assert got[:2] == (exp["open_time"], exp["side"])
            assert got[2] == pytest.approx(exp["qty"], rel=1e-12) and got[3] == pytest.approx(
                exp["price"], rel=1e-12
            )
            assert abs(got[4] - exp["cash_after"]) < 0.005 and abs(got[5] - exp["realized_pnl"]) < 0.005
        curve = ch.query(
            "SELECT equity FROM risk_state FINAL WHERE symbol = {s:String} ORDER BY open_time",
            parameters={"s": sym},
        ).result_rows
        assert len(curve) == len(r.curve)
        assert max(abs(g[0] - e) for g, e in zip(curve, r.curve["equity"], strict=True)) < 0.005
        outcomes = dict(ch.query(
            "SELECT outcome, count() FROM risk_decisions FINAL WHERE symbol = {s:String} GROUP BY outcome",
            parameters={"s": sym},
        ).result_rows)  # fmt: skip
        assert outcomes == r.decisions
    # every entry left the account within the limit; the two books did hold at once at times
    over = ch.query(
        "SELECT count() FROM risk_state AS s FINAL INNER JOIN (SELECT symbol, open_time FROM risk_decisions "
        "FINAL WHERE outcome = 'enter') AS d ON d.symbol = s.symbol AND d.open_time = s.open_time "
        "WHERE s.account_exposure > 7500 + 1e-6"
    ).result_rows[0][0]
    assert over == 0
    assert ch.query("SELECT max(account_exposure) FROM risk_state FINAL").result_rows[0][0] > 5_000
    # the API's account: the books' committed exposure against the limit in force
    import functools

    from fastapi.testclient import TestClient

    from api.main import create_app
    from ohlcv.infra.clickhouse import make_client
    from tests.api.conftest import AUTH, api_settings

    app = create_app(api_settings(symbols=["XRPUSDT", "LINKUSDT"]), broker_address=broker,
                     clickhouse_client_factory=functools.partial(make_client, ch_url, ch_db))  # fmt: skip
    with TestClient(app) as api:
        st = api.get("/api/risk/state", headers=AUTH).json()
    books = {b["symbol"]: b for b in st["books"]}
    assert set(books) == {"XRPUSDT", "LINKUSDT"}
    for sym, r in zip(("XRPUSDT", "LINKUSDT"), ref.values(), strict=True):
        assert abs(books[sym]["equity"] - r.curve["equity"].iloc[-1]) < 0.005
    want = sum(b["exposure"] + b["pending_notional"] for b in books.values())
    assert st["account"]["max_total_exposure"] == 7_500
    assert st["account"]["committed_exposure"] == pytest.approx(want)
