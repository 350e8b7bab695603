-- stocktrade system of record: the whole schema named in DESIGN.md.
-- Money and quantities are NUMERIC; times are TIMESTAMPTZ (UTC).
CREATE EXTENSION IF NOT EXISTS vector;

-- Market data -----------------------------------------------------------------------------
CREATE TABLE bars (
    symbol      TEXT          NOT NULL CHECK (length(symbol) BETWEEN 1 AND 32),
    -- The defaults read a transaction-local setting so a bulk COPY of a bar file can omit
    -- these columns (stocktrade sets them with SET LOCAL); without it an insert must name them.
    timeframe   TEXT          NOT NULL DEFAULT current_setting('stocktrade.timeframe')
                              CHECK (timeframe IN ('1m', '5m', '15m', '1h', '1d')),
    ts          TIMESTAMPTZ   NOT NULL,
    open        NUMERIC(18,8) NOT NULL,
    high        NUMERIC(18,8) NOT NULL,
    low         NUMERIC(18,8) NOT NULL,
    close       NUMERIC(18,8) NOT NULL,
    volume      NUMERIC(24,8) NOT NULL,
    source      TEXT          NOT NULL DEFAULT coalesce(current_setting('stocktrade.source', true), ''),
    adj_close   NUMERIC(18,8) CHECK (adj_close > 0),       -- split+dividend adjusted close
    dividend    NUMERIC(18,8) CHECK (dividend >= 0),       -- cash per share on the ex-date
    split       NUMERIC(12,6) CHECK (split > 0),           -- split ratio on the split date
    ingested_at TIMESTAMPTZ   NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe, ts),
    -- One combined check (cheaper per row than five): positive, consistent OHLC.
    CONSTRAINT bars_ohlcv_valid CHECK (low > 0 AND low <= open AND low <= close
        AND open <= high AND close <= high AND volume >= 0)
);
-- Range scans for backtests and training ("AAPL from 2020 to 2023", newest first).
CREATE INDEX bars_symbol_timeframe_ts_desc ON bars (symbol, timeframe, ts DESC);

-- Users, agents, runs, models ---------------------------------------------------------------
CREATE TABLE users (
    id          TEXT PRIMARY KEY,             -- Firebase uid ("local" on a laptop)
    email       TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO users (id, email) VALUES ('local', NULL);

CREATE TABLE runs (
    id               UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    owner            TEXT NOT NULL REFERENCES users(id),
    kind             TEXT NOT NULL CHECK (kind IN ('train', 'backtest')),
    status           TEXT NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    config           JSONB NOT NULL DEFAULT '{}'::jsonb,
    progress         REAL NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
    eta_seconds      REAL,
    message          TEXT,
    error            TEXT,
    artifact_prefix  TEXT,
    metrics          JSONB,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    execution        TEXT,                   -- Cloud Run execution name or local pid
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    heartbeat_at     TIMESTAMPTZ
);
CREATE INDEX runs_owner_created ON runs (owner, created_at DESC);
CREATE INDEX runs_status ON runs (status) WHERE status IN ('queued', 'running');

CREATE TABLE agents (
    id               UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    owner            TEXT NOT NULL REFERENCES users(id),
    name             TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('baseline', 'policy')),
    strategy         TEXT NOT NULL,
    params           JSONB NOT NULL DEFAULT '{}'::jsonb,
    symbols          TEXT[] NOT NULL,
    timeframe        TEXT NOT NULL DEFAULT '1d',
    model_version_id UUID,
    status           TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'halted', 'retired')),
    risk             JSONB NOT NULL DEFAULT '{}'::jsonb,
    costs            JSONB NOT NULL DEFAULT '{}'::jsonb,
    initial_cash     NUMERIC(20,6) NOT NULL DEFAULT 100000 CHECK (initial_cash > 0),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (owner, name)
);

CREATE TABLE model_versions (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id     UUID REFERENCES agents(id),
    agent_name   TEXT NOT NULL,
    run_id       UUID REFERENCES runs(id),
    version      INTEGER NOT NULL CHECK (version > 0),
    uri_onnx     TEXT NOT NULL,
    uri_sb3      TEXT,
    manifest     JSONB NOT NULL,
    sha256       TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'registered'
                 CHECK (status IN ('registered', 'promoted', 'rejected', 'retired')),
    gate         JSONB,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    promoted_at  TIMESTAMPTZ,
    UNIQUE (agent_name, version)
);
ALTER TABLE agents ADD CONSTRAINT agents_model_version_fk
    FOREIGN KEY (model_version_id) REFERENCES model_versions(id);
-- At most one promoted version per agent name.
CREATE UNIQUE INDEX model_versions_one_promoted ON model_versions (agent_name) WHERE status = 'promoted';

-- The live decision chain -------------------------------------------------------------------
CREATE TABLE signals (
    id                 UUID PRIMARY KEY,
    agent_id           UUID NOT NULL REFERENCES agents(id),
    symbol             TEXT NOT NULL,
    bar_ts             TIMESTAMPTZ NOT NULL,
    action             TEXT NOT NULL,
    confidence         DOUBLE PRECISION,
    probabilities      JSONB,
    model_version_id   UUID REFERENCES model_versions(id),
    inference_backend  TEXT,
    inference_latency_us DOUBLE PRECISION,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (agent_id, symbol, bar_ts)
);

CREATE TABLE decisions (
    id               UUID PRIMARY KEY,
    agent_id         UUID NOT NULL REFERENCES agents(id),
    symbol           TEXT NOT NULL,
    bar_ts           TIMESTAMPTZ NOT NULL,
    bar_number       BIGINT,
    signal_id        UUID REFERENCES signals(id),
    market_state     JSONB NOT NULL,   -- bar and features
    strategy_state   JSONB NOT NULL,   -- position, cash, equity
    policy_output    JSONB NOT NULL,   -- probabilities, chosen action
    model_version_id UUID REFERENCES model_versions(id),
    risk_checks      JSONB NOT NULL,   -- [{check, passed, code, reason}]
    sizing           JSONB NOT NULL,
    order_id         TEXT,             -- client_order_id, when an order resulted
    latencies        JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (agent_id, symbol, bar_ts)
);
CREATE INDEX decisions_agent_ts ON decisions (agent_id, bar_ts);

CREATE TABLE orders (
    client_order_id  TEXT PRIMARY KEY,
    agent_id         UUID NOT NULL REFERENCES agents(id),
    symbol           TEXT NOT NULL,
    side             TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    qty              NUMERIC(24,8) CHECK (qty IS NULL OR qty > 0),
    target_fraction  NUMERIC(12,8),
    order_type       TEXT NOT NULL DEFAULT 'market',
    status           TEXT NOT NULL DEFAULT 'new'
                     CHECK (status IN ('new', 'accepted', 'filled', 'partially_filled', 'cancelled', 'rejected')),
    decision_id      UUID REFERENCES decisions(id),
    bar_ts           TIMESTAMPTZ NOT NULL,
    broker           TEXT NOT NULL DEFAULT 'paper',
    broker_order_id  TEXT,
    reason           TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX orders_agent_created ON orders (agent_id, created_at);
CREATE INDEX orders_open ON orders (symbol) WHERE status IN ('new', 'accepted', 'partially_filled');

CREATE TABLE fills (
    id               TEXT PRIMARY KEY,
    client_order_id  TEXT NOT NULL REFERENCES orders(client_order_id),
    agent_id         UUID NOT NULL REFERENCES agents(id),
    symbol           TEXT NOT NULL,
    side             TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    qty              NUMERIC(24,8) NOT NULL CHECK (qty > 0),
    price            NUMERIC(24,10) NOT NULL CHECK (price > 0),
    fee              NUMERIC(24,10) NOT NULL DEFAULT 0 CHECK (fee >= 0),
    ts               TIMESTAMPTZ NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX fills_agent_ts ON fills (agent_id, ts);

CREATE TABLE positions (
    agent_id      UUID NOT NULL REFERENCES agents(id),
    symbol        TEXT NOT NULL,
    qty           NUMERIC(24,8) NOT NULL DEFAULT 0,
    avg_price     NUMERIC(24,10) NOT NULL DEFAULT 0,
    realized_pnl  NUMERIC(24,10) NOT NULL DEFAULT 0,
    lots          JSONB NOT NULL DEFAULT '[]'::jsonb,  -- open FIFO lots
    last_price    NUMERIC(24,10),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, symbol)
);

CREATE TABLE cash_ledger (
    id          BIGSERIAL PRIMARY KEY,
    agent_id    UUID NOT NULL REFERENCES agents(id),
    ts          TIMESTAMPTZ NOT NULL,
    amount      NUMERIC(24,10) NOT NULL,
    balance     NUMERIC(24,10) NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('deposit', 'buy', 'sell', 'fee', 'dividend', 'adjustment')),
    ref         TEXT,               -- fill id or other reference
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (agent_id, kind, ref)
);
CREATE INDEX cash_ledger_agent_ts ON cash_ledger (agent_id, id);

CREATE TABLE equity_snapshots (
    agent_id        UUID NOT NULL REFERENCES agents(id),
    ts              TIMESTAMPTZ NOT NULL,
    cash            NUMERIC(24,10) NOT NULL,
    positions_value NUMERIC(24,10) NOT NULL,
    equity          NUMERIC(24,10) NOT NULL,
    PRIMARY KEY (agent_id, ts)
);

CREATE TABLE leaderboard (
    agent_id      UUID PRIMARY KEY REFERENCES agents(id),
    total_return  DOUBLE PRECISION,
    sharpe        DOUBLE PRECISION,
    max_drawdown  DOUBLE PRECISION,
    trades        INTEGER NOT NULL DEFAULT 0,
    equity        NUMERIC(24,10),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- News -------------------------------------------------------------------------------------
CREATE TABLE news (
    id            TEXT PRIMARY KEY,
    symbols       TEXT[] NOT NULL DEFAULT '{}',
    published_at  TIMESTAMPTZ NOT NULL,
    headline      TEXT NOT NULL,
    url           TEXT,
    source        TEXT,
    embedding     vector(384),
    sentiment     DOUBLE PRECISION CHECK (sentiment BETWEEN -1 AND 1),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX news_symbols_published ON news USING gin (symbols);
CREATE INDEX news_published ON news (published_at DESC);

-- Delivery bookkeeping -----------------------------------------------------------------------
CREATE TABLE processed_events (
    handler      TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (handler, event_id)
);

CREATE TABLE outbox (
    id            BIGSERIAL PRIMARY KEY,
    event_id      TEXT NOT NULL UNIQUE,
    topic         TEXT NOT NULL,
    ordering_key  TEXT,
    payload       JSONB NOT NULL,
    attributes    JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at  TIMESTAMPTZ
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE dead_letters (
    id          BIGSERIAL PRIMARY KEY,
    handler     TEXT NOT NULL,
    event_id    TEXT,
    topic       TEXT,
    payload     TEXT,
    reason      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (handler, event_id)
);
