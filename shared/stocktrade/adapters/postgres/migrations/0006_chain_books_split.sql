-- Live chain, second step (0005 is applied on existing databases and never changes).
--
-- The strategy and feature states are the large documents of a book (a few KB of floats);
-- only a bar step changes them, while a decision changes the small bookkeeping columns. Kept
-- in their own table, a decision rewrites a small row (a HOT update, with the fillfactor
-- headroom) instead of copying and recompressing the states.
CREATE TABLE chain_book_states (
    agent_id       UUID NOT NULL,
    symbol         TEXT NOT NULL,
    strategy_state JSONB,
    feature_state  JSONB,
    PRIMARY KEY (agent_id, symbol),
    FOREIGN KEY (agent_id, symbol) REFERENCES chain_books (agent_id, symbol)
) WITH (fillfactor = 70);
INSERT INTO chain_book_states (agent_id, symbol, strategy_state, feature_state)
    SELECT agent_id, symbol, strategy_state, feature_state FROM chain_books;
ALTER TABLE chain_books DROP COLUMN strategy_state, DROP COLUMN feature_state;
ALTER TABLE chain_books SET (fillfactor = 50);

-- "Is this symbol known?" (a bar for a symbol no agent trades and none stored is refused).
CREATE INDEX agents_symbols ON agents USING gin (symbols);
