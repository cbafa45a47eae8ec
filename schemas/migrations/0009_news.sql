-- News (streams/rss.py polls, topologies/news.py dedups, normalizes and scores sentiment).
-- One row per unique story; a replayed record writes the same row again.
CREATE TABLE IF NOT EXISTS news_articles
(
    article_id          String,
    source              LowCardinality(String),
    link                String,
    guid                String,
    title               String,
    summary             String,
    author              String,
    categories          Array(String),
    symbols             Array(LowCardinality(String)),
    published_at        DateTime64(3, 'UTC'),
    published_estimated Bool,
    fetched_at          DateTime64(3, 'UTC'),
    poll_id             String,
    entry_key           String,
    link_key            String,
    title_key           String,
    sentiment           Float64,
    sentiment_label     LowCardinality(String),
    ingested_at         DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(published_at)
ORDER BY article_id;

-- Every entry of every poll and whether it was new: the dedup ratio per source and poll is
-- countIf(NOT duplicate) / count().
CREATE TABLE IF NOT EXISTS news_entries
(
    source      LowCardinality(String),
    poll_id     String,
    entry_key   String,
    fetched_at  DateTime64(3, 'UTC'),
    article_id  String,
    duplicate   Bool,
    duplicate_of_source LowCardinality(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (source, poll_id, entry_key);

-- Every poll of every feed as the poller saw it (status, HTTP code, entries, errors, backoff).
CREATE TABLE IF NOT EXISTS news_polls
(
    source      LowCardinality(String),
    poll_id     String,
    at          DateTime64(3, 'UTC'),
    feed_url    String,
    status      LowCardinality(String),
    http_status Nullable(UInt16),
    entries     UInt32,
    refused     UInt32,
    latency_ms  Nullable(Float64),
    error       String,
    retry_in_s  Nullable(Float64),
    error_streak UInt32
)
ENGINE = MergeTree
ORDER BY (source, at, poll_id);
