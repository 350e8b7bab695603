-- Live chain state: one paper book per (agent, symbol), per-bar book equity, closed trades.
--
-- Exact money: fills, orders, positions, the cash ledger and equity snapshots hold the values
-- the trading kernels produce (float64 results converted through their shortest repr, e.g.
-- 23.456789012345678), and the Decimal ledger sums them exactly. Fixed scales (NUMERIC(24,10))
-- would round those values and break the "chain equals backtest" comparison, so these columns
-- become unconstrained NUMERIC (exact, any scale). Existing CHECKs stay.
ALTER TABLE orders
    ALTER COLUMN qty TYPE NUMERIC,
    ALTER COLUMN target_fraction TYPE NUMERIC;
ALTER TABLE orders
    ADD COLUMN fill_ts    TIMESTAMPTZ,          -- when the paper broker filled or rejected it
    ADD COLUMN risk_codes TEXT[] NOT NULL DEFAULT '{}';  -- fill-time adjustments/rejections
ALTER TABLE fills
    ALTER COLUMN qty TYPE NUMERIC,
    ALTER COLUMN price TYPE NUMERIC,
    ALTER COLUMN fee TYPE NUMERIC;
-- The book's execution sequence: the ledger projection applies fills in this order (FIFO
-- matching depends on it), whatever order the fill events arrive in.
ALTER TABLE fills ADD COLUMN seq INTEGER;
CREATE UNIQUE INDEX fills_agent_symbol_seq ON fills (agent_id, symbol, seq);
ALTER TABLE positions
    ALTER COLUMN qty TYPE NUMERIC,
    ALTER COLUMN avg_price TYPE NUMERIC,
    ALTER COLUMN realized_pnl TYPE NUMERIC,
    ALTER COLUMN last_price TYPE NUMERIC;
ALTER TABLE positions
    ADD COLUMN fees_paid NUMERIC NOT NULL DEFAULT 0,
    ADD COLUMN fill_seq  INTEGER NOT NULL DEFAULT 0;   -- last fill seq applied
ALTER TABLE cash_ledger
    ALTER COLUMN amount TYPE NUMERIC,
    ALTER COLUMN balance TYPE NUMERIC;
ALTER TABLE equity_snapshots
    ALTER COLUMN cash TYPE NUMERIC,
    ALTER COLUMN positions_value TYPE NUMERIC,
    ALTER COLUMN equity TYPE NUMERIC;
ALTER TABLE leaderboard
    ALTER COLUMN equity TYPE NUMERIC;
ALTER TABLE leaderboard
    ADD COLUMN metrics JSONB NOT NULL DEFAULT '{}'::jsonb,   -- every compute_metrics value
    ADD COLUMN n_fills INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN as_of   TIMESTAMPTZ;                          -- last equity snapshot used

-- The paper book: everything the chain needs between two bars of one agent and symbol.
-- Handlers lock the row (SELECT ... FOR UPDATE) so one bar step or decision at a time
-- changes it, and write it in the transaction that records the event as processed.
CREATE TABLE chain_books (
    agent_id      UUID NOT NULL REFERENCES agents(id),
    symbol        TEXT NOT NULL,
    timeframe     TEXT NOT NULL,
    initial_cash  NUMERIC NOT NULL CHECK (initial_cash > 0),
    cash          NUMERIC NOT NULL,
    lots          JSONB NOT NULL DEFAULT '[]'::jsonb,  -- open FIFO lots (decimal strings)
    realised_pnl  NUMERIC NOT NULL DEFAULT 0,
    fees_paid     NUMERIC NOT NULL DEFAULT 0,
    bars_seen     BIGINT NOT NULL DEFAULT 0,           -- index of the next bar
    first_bar_ts  TIMESTAMPTZ,
    last_bar_ts   TIMESTAMPTZ,                         -- last bar stepped (fills, strategy)
    decided_ts    TIMESTAMPTZ,                         -- last bar decided (risk, sizing)
    risk_state    JSONB,                               -- services.trading.RiskState
    strategy_state JSONB,                              -- the strategy's own state
    feature_state JSONB,                               -- IncrementalFeatures (decision log)
    signal        JSONB,                               -- stepped bar awaiting its decision
    pending_order JSONB,                               -- order awaiting its fill bar
    fill_seq      INTEGER NOT NULL DEFAULT 0,          -- fills executed so far
    model_version_id UUID,                             -- policy the strategy state belongs to
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, symbol)
);
CREATE INDEX chain_books_symbol ON chain_books (symbol, timeframe);

-- Each book marked at every bar's close (what the backtest's per-book curves hold).
CREATE TABLE chain_book_equity (
    agent_id       UUID NOT NULL REFERENCES agents(id),
    symbol         TEXT NOT NULL,
    ts             TIMESTAMPTZ NOT NULL,
    bar_index      BIGINT NOT NULL,
    cash           NUMERIC NOT NULL,
    qty            NUMERIC NOT NULL,
    position_value NUMERIC NOT NULL,
    equity         NUMERIC NOT NULL,
    PRIMARY KEY (agent_id, symbol, ts)
);

-- Closed FIFO round trips, written by the ledger projection (on_fill).
CREATE TABLE chain_trades (
    agent_id       UUID NOT NULL REFERENCES agents(id),
    symbol         TEXT NOT NULL,
    exit_fill_id   TEXT NOT NULL,
    piece          INTEGER NOT NULL,                   -- nth lot closed by that fill
    side           TEXT NOT NULL CHECK (side IN ('buy', 'sell')),  -- entry side
    qty            NUMERIC NOT NULL,
    entry_ts       TIMESTAMPTZ NOT NULL,
    entry_price    NUMERIC NOT NULL,
    exit_ts        TIMESTAMPTZ NOT NULL,
    exit_price     NUMERIC NOT NULL,
    fees           NUMERIC NOT NULL,
    pnl            NUMERIC NOT NULL,
    entry_order_id TEXT,
    exit_order_id  TEXT,
    PRIMARY KEY (exit_fill_id, piece)
);
CREATE INDEX chain_trades_agent ON chain_trades (agent_id, exit_ts);
