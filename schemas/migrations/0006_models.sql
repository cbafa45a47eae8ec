-- Model registry (training.train, registry.store). A model's facts never change once
-- registered; which model is production for a stream is the newest promotion_events row of
-- that stream (one insert: atomic), so promote and rollback are events, not updates.
CREATE TABLE IF NOT EXISTS model_registry
(
    model_id            String,
    symbol              LowCardinality(String),
    interval            LowCardinality(String),
    version             UInt32,
    created_at          DateTime64(3, 'UTC'),
    algorithm           LowCardinality(String),
    artifact_path       String,
    artifact_sha256     String,
    feature_names       Array(String),
    feature_set_version UInt16,
    label_horizon_bars  UInt16,
    label_dead_zone     Float64,
    params              String,
    data_from           DateTime64(3, 'UTC'),
    data_to             DateTime64(3, 'UTC'),
    train_rows          UInt64,
    validation_rows     UInt64,
    excluded_incomplete UInt64,
    label_balance       Float64,
    metrics             String,
    train_metrics       String,
    importances         String,
    parent_model_id     String,
    trigger             LowCardinality(String),
    training_job_id     String,
    train_seconds       Float64
)
ENGINE = ReplacingMergeTree
ORDER BY model_id;

-- validation metrics at registration ("validation") and live calibration samples ("live")
CREATE TABLE IF NOT EXISTS model_metrics_history
(
    model_id  String,
    symbol    LowCardinality(String),
    interval  LowCardinality(String),
    at        DateTime64(3, 'UTC'),
    scope     LowCardinality(String),
    rows      UInt64,
    auc       Nullable(Float64),
    accuracy  Float64,
    brier     Float64,
    log_loss  Float64,
    ece       Float64,
    mce       Float64,
    bins      String
)
ENGINE = MergeTree
ORDER BY (symbol, interval, model_id, at);

CREATE TABLE IF NOT EXISTS model_lineage
(
    model_id        String,
    parent_model_id String,
    symbol          LowCardinality(String),
    interval        LowCardinality(String),
    trigger         LowCardinality(String),
    data_from       DateTime64(3, 'UTC'),
    data_to         DateTime64(3, 'UTC'),
    created_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY model_id;

-- one row per state of a job (running, succeeded, failed); FINAL gives its last state
CREATE TABLE IF NOT EXISTS training_jobs
(
    job_id         String,
    symbol         LowCardinality(String),
    interval       LowCardinality(String),
    status         LowCardinality(String),
    trigger        LowCardinality(String),
    requested_from Nullable(DateTime64(3, 'UTC')),
    requested_to   Nullable(DateTime64(3, 'UTC')),
    started_at     DateTime64(3, 'UTC'),
    finished_at    Nullable(DateTime64(3, 'UTC')),
    model_id       String,
    error          String,
    updated_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY job_id;

-- kind: promote (manual), auto (by the rules), rollback; from_model_id '' when the stream had none
CREATE TABLE IF NOT EXISTS promotion_events
(
    event_id      String,
    symbol        LowCardinality(String),
    interval      LowCardinality(String),
    at            DateTime64(3, 'UTC'),
    kind          LowCardinality(String),
    from_model_id String,
    to_model_id   String,
    from_metrics  String,
    to_metrics    String,
    recommended   Bool,
    reasons       String,
    actor         String
)
ENGINE = MergeTree
ORDER BY (symbol, interval, at, event_id);

CREATE TABLE IF NOT EXISTS retrain_events
(
    event_id String,
    symbol   LowCardinality(String),
    interval LowCardinality(String),
    at       DateTime64(3, 'UTC'),
    trigger  LowCardinality(String),
    decision LowCardinality(String),
    details  String,
    job_id   String
)
ENGINE = MergeTree
ORDER BY (symbol, interval, at, event_id);
