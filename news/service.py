"""The news poller service as the stack and ``ohlcv run news`` start it: the poller thread of
``streams.news_poller`` with the start-up bootstrap (``NEWS_STARTUP_BOOTSTRAP_*``) when the store
holds no story yet."""

from __future__ import annotations

import logging
from typing import Any

from news.backfill import BootstrapConfig, bootstrap, stored_total
from streams.news_poller import NewsPollerThread, poller_from_settings

logger = logging.getLogger(__name__)


def startup_bootstrap(settings: Any) -> Any:
    """The ``before`` step: a bootstrap of ``NEWS_STARTUP_BOOTSTRAP_DAYS`` days when that is set
    and ``news_articles`` is empty (else nothing)."""

    def run(t: NewsPollerThread) -> None:
        if not settings.news_startup_bootstrap_days or t.client is None:
            return
        if stored_total(t.client):
            logger.info("news store not empty: no start-up bootstrap")
            return
        cfg = BootstrapConfig(
            rounds=settings.news_startup_bootstrap_rounds,
            sleep_seconds=settings.news_startup_bootstrap_interval,
            recent_days=settings.news_startup_bootstrap_days,
            min_total=settings.news_startup_bootstrap_min_articles,
            max_pages=settings.news_backfill_max_pages,
        )
        out = bootstrap(t.poller, t.producer, t.client, cfg, stop=t.stop_event,
                        topic=t.topic, dead_topic=t.dead_topic)  # fmt: skip
        logger.info("news start-up bootstrap: %s, %s stored", out["stopped"], out["stored_total"])

    return run


def poller_thread(settings: Any, broker_address: str) -> NewsPollerThread:
    from ohlcv.infra.clickhouse import make_client

    return NewsPollerThread(
        poller_from_settings(settings),
        broker_address,
        make_client(settings.clickhouse_dsn),
        settings.news_poll_interval,
        before=startup_bootstrap(settings),
    )
