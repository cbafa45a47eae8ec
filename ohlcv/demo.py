"""``make demo``: the bundled real sample, replayed as a live market through the whole pipeline.

- History: the Binance Vision months (LINK/AVAX/NEAR USDT-M, Feb 2026) and all of the XRP/USDT
  spot dump except its last day are bulk-loaded into ClickHouse (the fast path for history),
  and their higher candles built there (``sinks.bulk_resample``);
  the candle topology re-seeds from them, and their feature rows are derived by the feature
  rebuild before the live candles start (the features state then seeds from them).
- Live: the XRP dump's last day is replayed onto the raw kline topic as a live market, one
  market minute per second by default (DEMO_SPEED), with in-progress updates before each close,
  so the API and the WebSocket show partial updates, closes, appends and resampled candles;
  DEMO_LIVE_DELAY seconds after the history is ready (default 0), so the console can be opened
  on the chart first.
- Five live minutes are withheld: the topology detects the gap and the gap orchestrator repairs
  it from a local fake Binance REST serving the same sample (there is no internet here); the
  continuity scan also queues the dump's two real exchange outages, which end as exchange_gap.
- The model monitor runs every 15 s: realized outcomes of the live scores, live calibration,
  drift against each model's training rows, Evidently reports every minute (``/api/reports``),
  and auto-retrain decisions (``/api/training/retrain/events``).
- News: the poller reads a local feed host (the real CoinDesk feed and a mirror of it; a new
  story every 30 s) every 10 s; the news topology dedups, scores sentiment and stores the
  stories (``/api/news/*``).
- A status line every few seconds: candles stored, gaps waiting for a repair, exchange gaps
  and repaired ones (effective states: the topology's joined with the orchestrator's), lag of
  the newest event.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from fakes.binance import Datasets, FakeBinance, Playback
from ohlcv.infra.clickhouse import make_client
from ohlcv.services import Extension, Services

logger = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parent.parent / "data"
XRP_DUMP = DATA / "freqtrade" / "binance" / "XRP_USDT-1m.json"
VISION_DIR = DATA / "binance-vision" / "futures-um" / "1m"
DEMO_SYMBOLS = ["XRPUSDT", "LINKUSDT", "AVAXUSDT", "NEARUSDT"]
LIVE_MS = 86_400_000  # the last day of the dump is the "live" market


def start_fake_binance_rest(services: Services) -> None:
    """No internet here: the orchestrator repairs from a local fake Binance REST that serves the
    bundled sample with Binance's real protocol. Its URLs replace the configured ones."""
    datasets = Datasets.from_data_dir(DATA)
    fake = FakeBinance(datasets, playback=Playback(autostart=False))
    urls = fake.start()
    stack = services.stack
    # the sample is years old: the window "all" (the whole stored span) is the longest, so the
    # scheduled scan sees (and queues) the dump's real exchange outages
    windows = [*stack.settings.continuity_windows_days, "all"]
    stack.settings = stack.settings.model_copy(
        update={"binance_spot_rest_url": urls.spot_rest, "binance_usdm_rest_url": urls.usdm_rest,
                "continuity_queue_missing": True, "continuity_scan_interval_s": 10.0,
                "continuity_windows_days": windows}
    )  # fmt: skip
    # the model monitor at demo pace: rounds every 15 s, reports every minute, auto-retrain on
    # (each unless set in the environment)
    pace = {"calibration_monitor_interval": 15.0, "calibration_min_rows": 50, "report_interval": 60.0,
            "auto_retrain_enabled": True}  # fmt: skip
    stack.settings = stack.settings.model_copy(
        update={k: v for k, v in pace.items() if k not in stack.settings.model_fields_set}
    )
    services.stoppers.append(fake.stop)
    _fake_news(services)
    print(
        f"binance     fake REST {urls.spot_rest} (serves the bundled sample; gap repairs use it)", flush=True
    )


def _fake_news(services: Services) -> None:
    """No internet: the news poller reads a local feed host serving the real CoinDesk feed and a
    second source carrying the same stories; a new story appears every 30 s."""
    from fakes.rss import FakeFeeds, coindesk, mirrored, with_new_items

    stack = services.stack
    if "news_rss_feeds" in stack.settings.model_fields_set:
        return  # the user's feeds
    feeds = FakeFeeds().start()
    urls = [f"coindesk={feeds.set('/coindesk.xml', coindesk())}",
            f"mirror={feeds.set('/mirror.xml', mirrored(coindesk()))}"]  # fmt: skip
    stack.settings = stack.settings.model_copy(update={"news_rss_feeds": urls, "news_poll_interval": 10.0})
    done = threading.Event()

    def _new_stories() -> None:
        k = 0
        while not done.wait(30.0):
            k += 1
            feeds.set("/coindesk.xml", with_new_items(coindesk(), k))

    threading.Thread(target=_new_stories, name="demo-news", daemon=True).start()

    def _stop() -> None:
        done.set()
        feeds.stop()

    services.stoppers.append(_stop)
    print(f"news        fake feeds {feeds.url('/')} (the real CoinDesk feed and a mirror)", flush=True)


def start_demo(services: Services, stop: threading.Event) -> None:
    from sinks.clickhouse_bulk import insert_candles, load_files
    from streams.importers import read_candles
    from streams.replay import replay_to_kafka

    settings = services.stack.settings
    client = make_client(settings.clickhouse_dsn)
    vision = sorted(VISION_DIR.glob("*.zip"))
    loaded = load_files(client, vision)
    xrp = list(read_candles(XRP_DUMP))
    split = xrp[-1].open_time - LIVE_MS
    history = [c for c in xrp if c.open_time <= split]
    # five minutes the "websocket" loses ten minutes in: the topology sees the gap, the
    # orchestrator repairs it from the fake REST, gap_repaired follows
    lost = range(split + 10 * 60_000, split + 15 * 60_000)
    live = [c for c in xrp if c.open_time > split and c.open_time not in lost]
    n = insert_candles(client, history)
    print(
        f"history     {loaded.inserted + n:,} candles bulk-loaded "
        f"({len(vision)} Vision months + XRP/USDT until the last day)",
        flush=True,
    )
    # their higher candles (5m … 1d), as `ohlcv import --mode bulk` builds them
    from sinks.bulk_resample import resample_history

    resampled = sum(r.written for r in resample_history(client, settings.resample_intervals))
    ivs = ",".join(settings.resample_intervals)
    print(f"resampled   {resampled:,} higher candles of the history ({ivs})", flush=True)
    # bulk-loaded history has no events, so no feature rows: derive them before the live
    # candles arrive, so the features state of each stream seeds from them (exact from bar one)
    if settings.features_enabled:
        from topologies.feature_rebuild import rebuild_features

        t0 = time.perf_counter()
        results = [rebuild_features(client, s, i) for s in settings.symbols for i in settings.all_intervals]
        print(
            f"features    {sum(r.written for r in results):,} feature rows derived for the history "
            f"(ohlcv features rebuild) in {time.perf_counter() - t0:.1f}s",
            flush=True,
        )
        if settings.scoring_enabled:
            _first_models(client, settings)
    speed = float(os.environ.get("DEMO_SPEED", "60"))
    delay = float(os.environ.get("DEMO_LIVE_DELAY", "0"))
    wait = f" in {delay:g}s (DEMO_LIVE_DELAY: open the console first)" if delay > 0 else ""
    print(
        f"live        replaying {len(live):,} XRPUSDT 1m candles at {speed:g}x with partial updates{wait}",
        flush=True,
    )

    def _replay() -> None:
        if delay > 0 and stop.wait(delay):
            return
        replay_to_kafka(
            services.stack.broker_address,
            live,
            partials=3,
            speed=speed,
            source="replay",
            stop=stop.is_set,
        )

    services.spawn("demo-replay", _replay, stop.set)
    services.spawn("demo-status", lambda: _status(settings.clickhouse_dsn, stop), stop.set)


def _first_models(client: Any, settings: Any) -> None:
    """A production model per 1m stream, trained on its history at start (reused while the
    history is unchanged), so scores flow with the first live candles."""
    from training.bootstrap import ensure_model
    from training.train import TrainConfig

    cfg = TrainConfig(horizon=settings.label_horizon_bars, dead_zone=settings.label_dead_zone,
                      threshold=settings.inference_prob_threshold,
                      params={**TrainConfig().params, "iterations": 150})  # fmt: skip
    for symbol in settings.symbols:
        t0 = time.perf_counter()
        b = ensure_model(client, symbol, "1m", artifact_dir=settings.artifact_dir, config=cfg)
        q = b.model.metrics
        print(
            f"model       {b.model.model_id} {'trained' if b.trained else 'reused'} in "
            f"{time.perf_counter() - t0:.1f}s: validation AUC {q['auc']:.3f}, Brier {q['brier']:.4f}, "
            f"ECE {q['ece']:.4f}{' (production)' if b.promoted else ''}",
            flush=True,
        )


def _status(url: str, stop: threading.Event, every_s: float = 5.0) -> None:
    from streams.backfill import segment_lifecycles
    from streams.continuity import WAITING_STATES

    client = make_client(url)
    while not stop.wait(every_s):
        try:
            candles, newest = client.query(
                "SELECT uniqExact(symbol, interval, seq), max(emitted_at) FROM ohlcv_events "
                "WHERE type = 'append'"
            ).result_rows[0]
            states = Counter(s.state for s in segment_lifecycles(client, symbols=None, intervals=None))
            total = client.query(  # exact before a merge: duplicates of a candle count once
                "SELECT uniqExact(symbol, interval, open_time) FROM ohlcv_candles WHERE is_closed"
            ).result_rows[0][0]
        except Exception as exc:  # the status line must never stop the demo
            logger.debug("status query failed: %s", exc)
            continue
        lag = time.time() - newest.timestamp() if candles else float("nan")
        print(
            f"status      candles stored {total:,}  live appends {candles:,}  "
            f"open gaps {sum(states[s] for s in WAITING_STATES)}  exchange gaps {states['exchange_gap']}  "
            f"repaired {states['repaired']}  last event {lag:.1f}s ago",
            flush=True,
        )


#: the demo on top of the stack: the fake Binance REST before the services, the sample after them
DEMO = Extension(prepare=start_fake_binance_rest, start=start_demo)
