-- Backtest runs: where their artifacts are and their exact money results.
-- runs.metrics (jsonb) keeps every metric; these NUMERIC columns hold the money exactly.
ALTER TABLE runs
    ADD COLUMN artifacts    JSONB NOT NULL DEFAULT '{}'::jsonb,   -- name -> URI
    ADD COLUMN initial_cash NUMERIC(24,10),
    ADD COLUMN final_equity NUMERIC(24,10),
    ADD COLUMN total_fees   NUMERIC(24,10) CHECK (total_fees IS NULL OR total_fees >= 0);

-- A failed run says why; a terminal run has finished_at.
ALTER TABLE runs
    ADD CONSTRAINT runs_failed_has_error CHECK (status <> 'failed' OR error IS NOT NULL),
    ADD CONSTRAINT runs_terminal_has_finished_at
        CHECK (status NOT IN ('succeeded', 'failed', 'cancelled') OR finished_at IS NOT NULL);
