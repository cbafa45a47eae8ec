-- Scores of the scoring topology (schemas.scores): every version of a feature row's score is
-- kept (one row per score_version; a replayed record writes the same row again, which the
-- engine folds), so argMax(..., score_version) is the current score and score_revised the
-- history of re-scores.
CREATE TABLE IF NOT EXISTS model_inference_log
(
    symbol                 LowCardinality(String),
    interval               LowCardinality(String),
    open_time              DateTime64(3, 'UTC'),
    score_version          UInt32,
    feature_version        UInt32,
    feature_set_version    UInt16,
    model_id               String,
    model_version          UInt32,
    probability            Float64,
    decision               Bool,
    threshold              Float64,
    window_complete        Bool,
    window_has_repair      Bool,
    bars_missing_in_window UInt16,
    reason                 LowCardinality(String),
    event_seq              UInt64,
    feature_emitted_at     DateTime64(3, 'UTC'),
    scored_at              DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(scored_at)
PARTITION BY toYYYYMM(open_time)
ORDER BY (symbol, interval, open_time, score_version);

-- feature rows scored more than once (re-derived after a repair or a late fill): the first and
-- the current decision, and whether the repair changed it
CREATE VIEW IF NOT EXISTS score_revised AS
SELECT
    symbol,
    interval,
    open_time,
    count() AS scores,
    max(score_version) AS last_version,
    argMin(probability, score_version) AS first_probability,
    argMax(probability, score_version) AS last_probability,
    argMin(decision, score_version) AS first_decision,
    argMax(decision, score_version) AS last_decision,
    first_decision != last_decision AS decision_changed
FROM model_inference_log FINAL
GROUP BY symbol, interval, open_time
HAVING scores > 1;
