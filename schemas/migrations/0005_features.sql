-- Feature rows: one per closed candle of a stream under FINAL (the highest feature_version).
-- o/h/l/c/v are the bar the row was derived from, bar_repaired its own repaired/late-filled
-- flag and carry its carried intermediates [pos, r1, ema_12, ema_26, macd_signal, avg_gain,
-- avg_loss, atr_14] (topologies.feature_logic): with them the features state of a stream is
-- rebuilt from this table alone (restart, history older than the state holds).
-- event_seq: the seq of the candle event that caused the row (0 for rebuilds).
CREATE TABLE IF NOT EXISTS feature_snapshots
(
    symbol                 LowCardinality(String),
    interval               LowCardinality(String),
    open_time              DateTime64(3, 'UTC'),
    ret_1                  Nullable(Float64),
    ret_5                  Nullable(Float64),
    ret_10                 Nullable(Float64),
    rsi_14                 Nullable(Float64),
    rolling_vol_20         Nullable(Float64),
    ma_20                  Nullable(Float64),
    ma_50                  Nullable(Float64),
    ema_12                 Nullable(Float64),
    ema_26                 Nullable(Float64),
    macd                   Nullable(Float64),
    macd_signal            Nullable(Float64),
    atr_14                 Nullable(Float64),
    vwap_20                Nullable(Float64),
    volume_z_20            Nullable(Float64),
    range_pct              Nullable(Float64),
    window_complete        Bool,
    bars_missing_in_window UInt16,
    window_has_repair      Bool,
    feature_version        UInt32,
    feature_set_version    UInt16,
    reason                 LowCardinality(String),
    open                   Float64,
    high                   Float64,
    low                    Float64,
    close                  Float64,
    volume                 Float64,
    bar_repaired           Bool,
    carry                  Array(Nullable(Float64)),
    event_seq              UInt64,
    emitted_at             DateTime64(3, 'UTC'),
    written_at             DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(feature_version)
PARTITION BY toYYYYMM(open_time)
ORDER BY (symbol, interval, open_time);
