-- Model monitoring (calibration.outcomes, calibration.live, reports, retrain).
--
-- The realized outcome of each score: a scheduled ClickHouse read (calibration.outcomes) joins
-- the current score of a bar with the candles LABEL_HORIZON_BARS later and applies the label
-- of training.labels. Re-run over the newest window each time, so a repaired candle re-labels
-- its scores (the newest realized_at wins).
CREATE TABLE IF NOT EXISTS score_outcomes
(
    symbol            LowCardinality(String),
    interval          LowCardinality(String),
    open_time         DateTime64(3, 'UTC'),
    score_version     UInt32,
    model_id          String,
    probability       Float64,
    decision          Bool,
    window_complete   Bool,
    window_has_repair Bool,
    label             UInt8,
    forward_return    Float64,
    horizon_bars      UInt16,
    realized_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(realized_at)
PARTITION BY toYYYYMM(open_time)
ORDER BY (symbol, interval, open_time, score_version);

-- One row per live calibration check of a production model: the newest window of realized
-- scores on clean windows (complete, no repair) against the model's validation calibration,
-- the flagged scores (incomplete or repaired windows) counted apart, the breach and its streak.
CREATE TABLE IF NOT EXISTS calibration_checks
(
    check_id           String,
    symbol             LowCardinality(String),
    interval           LowCardinality(String),
    model_id           String,
    at                 DateTime64(3, 'UTC'),
    status             LowCardinality(String),
    rows               UInt64,
    flagged_rows       UInt64,
    auc                Nullable(Float64),
    brier              Nullable(Float64),
    ece                Nullable(Float64),
    mce                Nullable(Float64),
    flagged_ece        Nullable(Float64),
    production_ece     Float64,
    ece_delta          Nullable(Float64),
    ece_relative       Nullable(Float64),
    breach             Bool,
    streak             UInt32,
    recommend_retrain  Bool,
    window_from        Nullable(DateTime64(3, 'UTC')),
    window_to          Nullable(DateTime64(3, 'UTC')),
    bins               String
)
ENGINE = MergeTree
ORDER BY (symbol, interval, at, check_id);

-- Evidently reports (reports.evidently_reports): the HTML file and its key numbers.
-- kind: data_drift (reference = the production model's training rows, current = the newest
-- AUTO_RETRAIN_DRIFT_WINDOW complete rows) or classification (the realized scores).
CREATE TABLE IF NOT EXISTS drift_reports
(
    report_id      String,
    symbol         LowCardinality(String),
    interval       LowCardinality(String),
    kind           LowCardinality(String),
    at             DateTime64(3, 'UTC'),
    model_id       String,
    trigger        LowCardinality(String),
    reference_from Nullable(DateTime64(3, 'UTC')),
    reference_to   Nullable(DateTime64(3, 'UTC')),
    current_from   DateTime64(3, 'UTC'),
    current_to     DateTime64(3, 'UTC'),
    reference_rows UInt64,
    current_rows   UInt64,
    drifted_columns UInt32,
    drift_share    Float64,
    metrics        String,
    path           String,
    bytes          UInt64,
    seconds        Float64
)
ENGINE = MergeTree
ORDER BY (symbol, interval, at, report_id);
