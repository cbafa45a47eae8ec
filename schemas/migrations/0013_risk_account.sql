-- The account's measure for max_total_exposure after each bar's decision: every book's committed
-- exposure (its position at its last mark, plus a buy decided and not yet filled).
ALTER TABLE risk_state ADD COLUMN IF NOT EXISTS account_exposure Float64 DEFAULT 0 AFTER pending;
