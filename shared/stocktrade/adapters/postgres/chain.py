"""The live chain's rows in Postgres: books, signals, decisions, orders, fills, ledger, equity.

:class:`PostgresChainStore` implements :class:`stocktrade.services.chain_engine.ChainStore`
on the connection of the delivery transaction it runs in (it never commits; the delivery
service does). Writes are batched: one ``executemany`` (pipelined by psycopg) per table per
effect, whatever the number of events, so a burst of thousands of bars costs a handful of
round trips. Reads for reports (decision log, divergence, leaderboard) live here too.

Lock order, to keep concurrent handlers free of deadlocks: book rows by (agent, symbol);
the ledger projection locks agent rows (``FOR NO KEY UPDATE``, which foreign-key checks of
other handlers do not wait for) and then position rows, both sorted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from psycopg.types.json import Jsonb

from stocktrade.adapters.postgres.agents import (
    AGENT_VERSION,
    agents_by_version,
)
from stocktrade.domain.bars import Bar as DomainBar
from stocktrade.services.chain_engine import BookRow, ChainWrites, FillProjection
from stocktrade.services.paper_book import BookState

if TYPE_CHECKING:
    import psycopg

    from stocktrade.schemas.events import ModelPromoted
    from stocktrade.services.agents import AgentConfig

__all__ = ["PostgresChainStore"]

# A book's bookkeeping; its strategy and feature states live in chain_book_states (read on
# demand by load_states: a warm process already holds them).
_BOOK_COLUMNS = (
    "b.agent_id, b.symbol, b.timeframe, b.initial_cash, b.cash, b.lots, b.realised_pnl, "
    "b.fees_paid, b.bars_seen, b.first_bar_ts, b.last_bar_ts, b.decided_ts, b.risk_state, "
    "b.signal, b.pending_order, b.fill_seq, b.model_version_id"
)
_N_BOOK = 17
_EQUITY_LOCK = 52_431  # advisory-lock namespace of the agents' equity snapshots
_BOOK_FROM = "chain_books b JOIN agents a ON a.id = b.agent_id"


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _book(row: Sequence[Any]) -> BookState:
    return BookState(
        agent_id=row[0],
        symbol=row[1],
        timeframe=row[2],
        initial_cash=row[3],
        cash=row[4],
        lots=list(row[5] or []),
        realised_pnl=row[6],
        fees_paid=row[7],
        bars_seen=int(row[8]),
        first_bar_ts=_utc(row[9]),
        last_bar_ts=_utc(row[10]),
        decided_ts=_utc(row[11]),
        risk_state=row[12],
        signal=row[13],
        pending_order=row[14],
        fill_seq=int(row[15]),
        model_version_id=row[16],
        states_loaded=False,
    )


def _json(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


class PostgresChainStore:
    """Chain storage on ``conn`` (inside the caller's transaction).

    Args:
        conn: a psycopg connection (the delivery transaction's, or any for reads).
    """

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def _many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany(sql, rows)

    # -- bars -----------------------------------------------------------------------------
    def unknown_symbols(self, symbols: Iterable[str]) -> set[str]:
        wanted = sorted(set(symbols))
        if not wanted:
            return set()
        rows = self.conn.execute(
            "SELECT s FROM unnest(%s::text[]) AS u(s) "
            "WHERE NOT EXISTS (SELECT 1 FROM bars WHERE bars.symbol = u.s) "
            "AND NOT EXISTS (SELECT 1 FROM agents WHERE agents.symbols @> ARRAY[u.s])",
            (wanted,),
        ).fetchall()
        return {r[0] for r in rows}

    def upsert_bars(self, bars: Sequence[DomainBar]) -> None:
        """Store bars keyed (symbol, timeframe, ts); a stored row changes only when its
        prices or volume differ (then the new source is recorded too)."""
        self._many(
            """
            INSERT INTO bars (symbol, timeframe, ts, open, high, low, close, volume, source)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (symbol, timeframe, ts) DO UPDATE
            SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
                close = EXCLUDED.close, volume = EXCLUDED.volume, source = EXCLUDED.source,
                ingested_at = now()
            WHERE (bars.open, bars.high, bars.low, bars.close, bars.volume)
                  IS DISTINCT FROM
                  (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume)
            """,
            [
                (
                    b.symbol,
                    b.timeframe.value,
                    b.ts,
                    b.open,
                    b.high,
                    b.low,
                    b.close,
                    b.volume,
                    b.source,
                )
                for b in bars
            ],
        )

    # -- books ----------------------------------------------------------------------------
    def _rows(self, sql: str, params: Sequence[Any]) -> list[BookRow]:
        rows = self.conn.execute(sql, params).fetchall()
        agents = agents_by_version(self.conn, sorted({tuple(r[_N_BOOK:]) for r in rows}, key=str))
        return [BookRow(agents[r[_N_BOOK]], _book(r[:_N_BOOK])) for r in rows]

    def load_states(self, books: Sequence[BookState]) -> None:
        if not books:
            return
        rows = self.conn.execute(
            "SELECT agent_id, symbol, strategy_state, feature_state FROM chain_book_states "
            "WHERE (agent_id, symbol) IN (SELECT * FROM unnest(%s::uuid[], %s::text[]))",
            ([b.agent_id for b in books], [b.symbol for b in books]),
        ).fetchall()
        found = {(r[0], r[1]): (r[2], r[3]) for r in rows}
        for b in books:
            b.strategy_state, b.feature_state = found.get(b.key, (None, None))
            b.states_loaded = True

    def lock_books_for_symbols(self, keys: Iterable[tuple[str, str]]) -> list[BookRow]:
        keys = sorted(set(keys))
        if not keys:
            return []
        return self._rows(
            f"SELECT {_BOOK_COLUMNS}, {AGENT_VERSION} FROM {_BOOK_FROM} "
            "WHERE (b.symbol, b.timeframe) IN (SELECT * FROM unnest(%s::text[], %s::text[])) "
            "AND a.status = 'active' ORDER BY b.agent_id, b.symbol FOR UPDATE OF b",
            ([k[0] for k in keys], [k[1] for k in keys]),
        )

    def lock_books(self, keys: Iterable[tuple[UUID, str]]) -> dict[tuple[UUID, str], BookRow]:
        keys = sorted(set(keys))
        if not keys:
            return {}
        rows = self._rows(
            f"SELECT {_BOOK_COLUMNS}, {AGENT_VERSION} FROM {_BOOK_FROM} "
            "WHERE (b.agent_id, b.symbol) IN (SELECT * FROM unnest(%s::uuid[], %s::text[])) "
            "ORDER BY b.agent_id, b.symbol FOR UPDATE OF b",
            ([k[0] for k in keys], [k[1] for k in keys]),
        )
        return {r.book.key: r for r in rows}

    def books(self, agent_id: UUID) -> list[BookState]:
        """The agent's books (no lock), in symbol order."""
        rows = self.conn.execute(
            f"SELECT {_BOOK_COLUMNS} FROM chain_books b WHERE b.agent_id = %s ORDER BY b.symbol",
            (agent_id,),
        ).fetchall()
        return [_book(r) for r in rows]

    def agents(self, ids: Iterable[UUID]) -> dict[UUID, AgentConfig]:
        wanted = sorted(set(ids), key=str)
        if not wanted:
            return {}
        rows = self.conn.execute(
            f"SELECT {AGENT_VERSION} FROM agents a WHERE a.id = ANY(%s::uuid[])", (wanted,)
        ).fetchall()
        return agents_by_version(self.conn, [tuple(r) for r in rows])

    # -- writes of on_bar / on_signal -----------------------------------------------------
    def flush(self, writes: ChainWrites) -> None:
        stepped = [b for k, b in writes.books.items() if k in writes.stepped]
        decided = [b for k, b in writes.books.items() if k not in writes.stepped]
        self._many(
            "UPDATE chain_books SET cash = %s, lots = %s, realised_pnl = %s, fees_paid = %s, "
            "bars_seen = %s, first_bar_ts = %s, last_bar_ts = %s, decided_ts = %s, "
            "risk_state = %s, signal = %s, pending_order = %s, fill_seq = %s, "
            "model_version_id = %s, updated_at = now() WHERE agent_id = %s AND symbol = %s",
            [
                (
                    b.cash,
                    Jsonb(b.lots),
                    b.realised_pnl,
                    b.fees_paid,
                    b.bars_seen,
                    b.first_bar_ts,
                    b.last_bar_ts,
                    b.decided_ts,
                    _json(b.risk_state),
                    _json(b.signal),
                    _json(b.pending_order),
                    b.fill_seq,
                    b.model_version_id,
                    b.agent_id,
                    b.symbol,
                )
                for b in stepped
            ],
        )
        self._many(
            "INSERT INTO chain_book_states (agent_id, symbol, strategy_state, feature_state) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (agent_id, symbol) DO UPDATE "
            "SET strategy_state = EXCLUDED.strategy_state, feature_state = EXCLUDED.feature_state",
            [
                (b.agent_id, b.symbol, _json(b.strategy_state), _json(b.feature_state))
                for b in stepped
            ],
        )
        # A decision changes neither the strategy nor the features: leave them unwritten.
        self._many(
            "UPDATE chain_books SET cash = %s, lots = %s, realised_pnl = %s, fees_paid = %s, "
            "decided_ts = %s, risk_state = %s, signal = %s, pending_order = %s, "
            "updated_at = now() WHERE agent_id = %s AND symbol = %s",
            [
                (
                    b.cash,
                    Jsonb(b.lots),
                    b.realised_pnl,
                    b.fees_paid,
                    b.decided_ts,
                    _json(b.risk_state),
                    _json(b.signal),
                    _json(b.pending_order),
                    b.agent_id,
                    b.symbol,
                )
                for b in decided
            ],
        )
        self._many(
            "INSERT INTO signals (id, agent_id, symbol, bar_ts, action, confidence, probabilities, "
            "model_version_id, inference_backend, inference_latency_us) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [
                (
                    s["id"],
                    s["agent_id"],
                    s["symbol"],
                    s["bar_ts"],
                    s["action"],
                    s["confidence"],
                    _json(s["probabilities"]),
                    s["model_version_id"],
                    s["inference_backend"],
                    s["inference_latency_us"],
                )
                for s in writes.signals
            ],
        )
        self._many(
            "INSERT INTO decisions (id, agent_id, symbol, bar_ts, bar_number, signal_id, "
            "market_state, strategy_state, policy_output, model_version_id, risk_checks, sizing, "
            "order_id, latencies) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            [
                (
                    d["id"],
                    d["agent_id"],
                    d["symbol"],
                    d["bar_ts"],
                    d["bar_number"],
                    d["signal_id"],
                    Jsonb(d["market_state"]),
                    Jsonb(d["strategy_state"]),
                    Jsonb(d["policy_output"]),
                    d["model_version_id"],
                    Jsonb(d["risk_checks"]),
                    Jsonb(d["sizing"]),
                    d["order_id"],
                    Jsonb(d["latencies"]),
                )
                for d in writes.decisions
            ],
        )
        self._many(
            "INSERT INTO orders (client_order_id, agent_id, symbol, side, target_fraction, "
            "decision_id, bar_ts, broker, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, 'paper', %s) "
            "ON CONFLICT DO NOTHING",
            [
                (
                    o["client_order_id"],
                    o["agent_id"],
                    o["symbol"],
                    o["side"],
                    o["target_fraction"],
                    o["decision_id"],
                    o["bar_ts"],
                    o["reason"],
                )
                for o in writes.orders
            ],
        )
        self._many(
            "INSERT INTO fills (id, client_order_id, agent_id, symbol, side, qty, price, fee, ts, "
            "seq) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [
                (
                    f["id"],
                    f["client_order_id"],
                    f["agent_id"],
                    f["symbol"],
                    f["side"],
                    f["qty"],
                    f["price"],
                    f["fee"],
                    f["ts"],
                    f["seq"],
                )
                for f in writes.fills
            ],
        )
        self._many(
            "UPDATE orders SET status = %s, side = coalesce(%s, side), qty = %s, fill_ts = %s, "
            "risk_codes = %s, broker_order_id = coalesce(broker_order_id, 'paper-' || "
            "client_order_id), updated_at = now() WHERE client_order_id = %s",
            [
                (
                    o["status"],
                    o["side"],
                    o["qty"],
                    o["fill_ts"],
                    o["risk_codes"],
                    o["client_order_id"],
                )
                for o in writes.filled_orders
            ],
        )
        self._many(
            "INSERT INTO chain_book_equity (agent_id, symbol, ts, bar_index, cash, qty, "
            "position_value, equity) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            [
                (
                    e["agent_id"],
                    e["symbol"],
                    e["ts"],
                    e["bar_index"],
                    e["cash"],
                    e["qty"],
                    e["position_value"],
                    e["equity"],
                )
                for e in writes.book_equity
            ],
        )
        if writes.equity_from:
            agents = sorted(writes.equity_from, key=str)
            self.refresh_equity(agents, [writes.equity_from[a] for a in agents])

    def refresh_equity(self, agent_ids: Sequence[UUID], since: Sequence[datetime]) -> None:
        """Recompute the agents' equity snapshots from ``since`` on: at every time one of
        its books has a bar, the sum over its books of each book's latest marked state
        (a book before its first bar counts its starting cash, like the backtest).

        Books of one agent may be decided by concurrent transactions (other instances): an
        advisory lock per agent, held to the end of the transaction, makes the second wait
        for the first to commit, so its statement sees the first book's new mark.
        """
        self.conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(s.a::text)) "
            "FROM (SELECT a FROM unnest(%s::uuid[]) AS a ORDER BY a) s",
            (_EQUITY_LOCK, list(agent_ids)),
        )
        self.conn.execute(
            """
            WITH req AS (
                SELECT agent_id, min(ts) AS ts
                FROM unnest(%s::uuid[], %s::timestamptz[]) AS r(agent_id, ts) GROUP BY agent_id
            ), grid AS (
                SELECT DISTINCT e.agent_id, e.ts
                FROM chain_book_equity e JOIN req ON e.agent_id = req.agent_id AND e.ts >= req.ts
            )
            INSERT INTO equity_snapshots (agent_id, ts, cash, positions_value, equity)
            SELECT g.agent_id, g.ts, sum(coalesce(x.cash, b.initial_cash)),
                   sum(coalesce(x.position_value, 0)), sum(coalesce(x.equity, b.initial_cash))
            FROM grid g
            JOIN chain_books b ON b.agent_id = g.agent_id
            LEFT JOIN LATERAL (
                SELECT e.cash, e.position_value, e.equity FROM chain_book_equity e
                WHERE e.agent_id = b.agent_id AND e.symbol = b.symbol AND e.ts <= g.ts
                ORDER BY e.ts DESC LIMIT 1
            ) x ON true
            GROUP BY g.agent_id, g.ts
            ON CONFLICT (agent_id, ts) DO UPDATE
            SET cash = EXCLUDED.cash, positions_value = EXCLUDED.positions_value,
                equity = EXCLUDED.equity
            """,
            (list(agent_ids), list(since)),
        )

    # -- on_order -------------------------------------------------------------------------
    def existing_orders(self, client_order_ids: Iterable[str]) -> set[str]:
        ids = sorted(set(client_order_ids))
        rows = self.conn.execute(
            "SELECT client_order_id FROM orders WHERE client_order_id = ANY(%s)", (ids,)
        ).fetchall()
        return {r[0] for r in rows}

    def accept_orders(self, client_order_ids: Iterable[str]) -> None:
        self.conn.execute(
            "UPDATE orders SET status = 'accepted', broker_order_id = 'paper-' || client_order_id, "
            "updated_at = now() WHERE client_order_id = ANY(%s) AND status = 'new'",
            (sorted(set(client_order_ids)),),
        )

    # -- on_fill --------------------------------------------------------------------------
    def existing_fills(self, fill_ids: Iterable[str]) -> set[str]:
        ids = sorted(set(fill_ids))
        rows = self.conn.execute("SELECT id FROM fills WHERE id = ANY(%s)", (ids,)).fetchall()
        return {r[0] for r in rows}

    def lock_projections(self, keys: Iterable[tuple[UUID, str]]) -> list[FillProjection]:
        keys = sorted(set(keys), key=lambda k: (str(k[0]), k[1]))
        if not keys:
            return []
        agents = sorted({k[0] for k in keys}, key=str)
        self.conn.execute(
            "SELECT id FROM agents WHERE id = ANY(%s::uuid[]) ORDER BY id FOR NO KEY UPDATE",
            (agents,),
        )
        a_ids, syms = [k[0] for k in keys], [k[1] for k in keys]
        positions = self.conn.execute(
            "SELECT agent_id, symbol, qty, realized_pnl, fees_paid, lots, fill_seq FROM positions "
            "WHERE (agent_id, symbol) IN (SELECT * FROM unnest(%s::uuid[], %s::text[])) "
            "ORDER BY agent_id, symbol FOR UPDATE",
            (a_ids, syms),
        ).fetchall()
        fills = self.conn.execute(
            "SELECT f.agent_id, f.symbol, f.id, f.client_order_id, f.side, f.qty, f.price, f.fee, "
            "f.ts, f.seq FROM fills f JOIN positions p ON p.agent_id = f.agent_id "
            "AND p.symbol = f.symbol "
            "WHERE (f.agent_id, f.symbol) IN (SELECT * FROM unnest(%s::uuid[], %s::text[])) "
            "AND f.seq > p.fill_seq ORDER BY f.agent_id, f.symbol, f.seq",
            (a_ids, syms),
        ).fetchall()
        by_key: dict[tuple[UUID, str], list[dict[str, Any]]] = defaultdict(list)
        names = (
            "agent_id",
            "symbol",
            "id",
            "client_order_id",
            "side",
            "qty",
            "price",
            "fee",
            "ts",
            "seq",
        )
        for r in fills:
            rec = dict(zip(names, r, strict=True))
            rec["ts"] = _utc(rec["ts"])
            by_key[(r[0], r[1])].append(rec)
        return [
            FillProjection(
                p[0],
                p[1],
                p[2],
                p[3],
                p[4],
                list(p[5] or []),
                int(p[6]),
                by_key.get((p[0], p[1]), []),
            )
            for p in positions
        ]

    def cash_balances(self, agent_ids: Iterable[UUID]) -> dict[UUID, Decimal]:
        ids = sorted(set(agent_ids), key=str)
        rows = self.conn.execute(
            "SELECT DISTINCT ON (agent_id) agent_id, balance FROM cash_ledger "
            "WHERE agent_id = ANY(%s::uuid[]) ORDER BY agent_id, id DESC",
            (ids,),
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def save_projection(
        self,
        positions: Sequence[dict[str, Any]],
        cash_rows: Sequence[dict[str, Any]],
        trades: Sequence[dict[str, Any]],
    ) -> None:
        self._many(
            "UPDATE positions SET qty = %s, avg_price = %s, realized_pnl = %s, fees_paid = %s, "
            "lots = %s, last_price = coalesce(%s, last_price), fill_seq = %s, updated_at = now() "
            "WHERE agent_id = %s AND symbol = %s",
            [
                (
                    p["qty"],
                    p["avg_price"],
                    p["realized_pnl"],
                    p["fees_paid"],
                    Jsonb(p["lots"]),
                    p["last_price"],
                    p["fill_seq"],
                    p["agent_id"],
                    p["symbol"],
                )
                for p in positions
            ],
        )
        self._many(
            "INSERT INTO cash_ledger (agent_id, ts, amount, balance, kind, ref) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (c["agent_id"], c["ts"], c["amount"], c["balance"], c["kind"], c["ref"])
                for c in cash_rows
            ],
        )
        self._many(
            "INSERT INTO chain_trades (agent_id, symbol, exit_fill_id, piece, side, qty, entry_ts, "
            "entry_price, exit_ts, exit_price, fees, pnl, entry_order_id, exit_order_id) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    t["agent_id"],
                    t["symbol"],
                    t["exit_fill_id"],
                    t["piece"],
                    t["side"],
                    t["qty"],
                    t["entry_ts"],
                    t["entry_price"],
                    t["exit_ts"],
                    t["exit_price"],
                    t["fees"],
                    t["pnl"],
                    t["entry_order_id"],
                    t["exit_order_id"],
                )
                for t in trades
            ],
        )

    # -- leaderboard ----------------------------------------------------------------------
    def refresh_leaderboard(self, agent_ids: Iterable[UUID]) -> list[dict[str, Any]]:
        from stocktrade.backtest.engine import periods_per_year
        from stocktrade.services.leaderboard import leaderboard_row

        ids = sorted(set(agent_ids), key=str)
        if not ids:
            return []
        agents = self.agents(ids)
        curves: dict[UUID, list[tuple[Any, ...]]] = defaultdict(list)
        for r in self.conn.execute(
            "SELECT agent_id, ts, positions_value, equity FROM equity_snapshots "
            "WHERE agent_id = ANY(%s::uuid[]) ORDER BY agent_id, ts",
            (ids,),
        ):
            curves[r[0]].append(r[1:])
        pnls: dict[UUID, list[float]] = defaultdict(list)
        for r in self.conn.execute(
            "SELECT agent_id, pnl::float8 FROM chain_trades WHERE agent_id = ANY(%s::uuid[]) "
            "ORDER BY agent_id, exit_ts, symbol, piece",
            (ids,),
        ):
            pnls[r[0]].append(r[1])
        notional: dict[UUID, dict[datetime, float]] = defaultdict(dict)
        n_fills: dict[UUID, int] = defaultdict(int)
        for r in self.conn.execute(
            "SELECT agent_id, ts, sum(abs(qty * price))::float8, count(*) FROM fills "
            "WHERE agent_id = ANY(%s::uuid[]) GROUP BY agent_id, ts",
            (ids,),
        ):
            notional[r[0]][r[1]] = r[2]
            n_fills[r[0]] += int(r[3])
        out = []
        for agent_id in ids:
            agent = agents.get(agent_id)
            if agent is None:
                continue
            row = leaderboard_row(
                agent,
                curves.get(agent_id, []),
                pnls.get(agent_id, []),
                notional.get(agent_id, {}),
                n_fills.get(agent_id, 0),
                periods_per_year(agent.timeframe),
            )
            out.append(row)
        self._many(
            "INSERT INTO leaderboard (agent_id, total_return, sharpe, max_drawdown, trades, equity, "
            "metrics, n_fills, as_of, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "now()) ON CONFLICT (agent_id) DO UPDATE SET total_return = EXCLUDED.total_return, "
            "sharpe = EXCLUDED.sharpe, max_drawdown = EXCLUDED.max_drawdown, "
            "trades = EXCLUDED.trades, equity = EXCLUDED.equity, metrics = EXCLUDED.metrics, "
            "n_fills = EXCLUDED.n_fills, as_of = EXCLUDED.as_of, updated_at = now()",
            [
                (
                    r["agent_id"],
                    r["total_return"],
                    r["sharpe"],
                    r["max_drawdown"],
                    r["trades"],
                    r["equity"],
                    Jsonb(r["metrics"]),
                    r["n_fills"],
                    r["as_of"],
                )
                for r in out
            ],
        )
        return out

    def leaderboard(self, *, owner: str | None = None) -> list[dict[str, Any]]:
        """Leaderboard rows with agent names, best total return first."""
        cur = self.conn.execute(
            "SELECT a.id AS agent_id, a.name, a.owner, a.strategy, a.kind, a.status, "
            "l.total_return, l.sharpe, l.max_drawdown, l.trades, l.n_fills, l.equity, "
            "a.initial_cash, l.as_of, l.metrics FROM leaderboard l JOIN agents a ON a.id = l.agent_id "
            "WHERE %(o)s::text IS NULL OR a.owner = %(o)s "
            "ORDER BY l.total_return DESC NULLS LAST, a.name",
            {"o": owner},
        )
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    # -- model promotion ------------------------------------------------------------------
    def follow_promotion(self, event: ModelPromoted) -> list[UUID]:
        rows = self.conn.execute(
            "UPDATE agents SET model_version_id = %(v)s WHERE kind = 'policy' "
            "AND EXISTS (SELECT 1 FROM model_versions WHERE id = %(v)s) "
            "AND (id = %(a)s OR (params->>'model_name' = %(n)s "
            "AND coalesce((params->>'follow_promotions')::boolean, true))) "
            "AND model_version_id IS DISTINCT FROM %(v)s RETURNING id",
            {"v": event.model_version_id, "a": event.agent_id, "n": event.agent_name},
        ).fetchall()
        return [r[0] for r in rows]

    # -- reports --------------------------------------------------------------------------
    def _dicts(self, sql: str, params: Any) -> list[dict[str, Any]]:
        cur = self.conn.execute(sql, params)
        names = [d.name for d in cur.description or []]
        out = []
        for r in cur.fetchall():
            row = dict(zip(names, r, strict=True))
            for k, v in row.items():
                if isinstance(v, datetime):
                    row[k] = v.astimezone(UTC)
            out.append(row)
        return out

    def decisions(
        self,
        agent_id: UUID,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        symbol: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """The agent's decisions in ``[start, end]`` with their order's outcome, by time."""
        return self._dicts(
            "SELECT d.id, d.agent_id, d.symbol, d.bar_ts, d.bar_number, d.signal_id, "
            "d.market_state, d.strategy_state, d.policy_output, d.model_version_id, "
            "d.risk_checks, d.sizing, d.order_id, d.latencies, d.created_at, "
            "o.status AS order_status, o.side AS order_side, o.qty AS order_qty, "
            "o.fill_ts AS order_fill_ts, o.risk_codes AS order_risk_codes, "
            "f.price AS fill_price, f.fee AS fill_fee "
            "FROM decisions d LEFT JOIN orders o ON o.client_order_id = d.order_id "
            "LEFT JOIN fills f ON f.client_order_id = d.order_id "
            "WHERE d.agent_id = %(a)s AND (%(s)s::timestamptz IS NULL OR d.bar_ts >= %(s)s) "
            "AND (%(e)s::timestamptz IS NULL OR d.bar_ts <= %(e)s) "
            "AND (%(y)s::text IS NULL OR d.symbol = %(y)s) "
            "ORDER BY d.bar_ts, d.symbol LIMIT %(l)s",
            {"a": agent_id, "s": start, "e": end, "y": symbol, "l": limit},
        )

    def orders(
        self, agent_id: UUID, start: datetime | None = None, end: datetime | None = None
    ) -> list[dict[str, Any]]:
        """The agent's orders decided in ``[start, end]``, by decision time then symbol."""
        return self._dicts(
            "SELECT client_order_id, symbol, side, qty, target_fraction, status, bar_ts, fill_ts, "
            "reason, risk_codes FROM orders WHERE agent_id = %(a)s "
            "AND (%(s)s::timestamptz IS NULL OR bar_ts >= %(s)s) "
            "AND (%(e)s::timestamptz IS NULL OR bar_ts <= %(e)s) ORDER BY bar_ts, symbol",
            {"a": agent_id, "s": start, "e": end},
        )

    def fills(
        self, agent_id: UUID, start: datetime | None = None, end: datetime | None = None
    ) -> list[dict[str, Any]]:
        """The agent's fills in ``[start, end]``, by time then symbol."""
        return self._dicts(
            "SELECT id, client_order_id, symbol, side, qty, price, fee, ts, seq FROM fills "
            "WHERE agent_id = %(a)s AND (%(s)s::timestamptz IS NULL OR ts >= %(s)s) "
            "AND (%(e)s::timestamptz IS NULL OR ts <= %(e)s) ORDER BY ts, symbol",
            {"a": agent_id, "s": start, "e": end},
        )

    def book_equity(
        self, agent_id: UUID, start: datetime | None = None, end: datetime | None = None
    ) -> list[dict[str, Any]]:
        """The books' marks at every decided bar in ``[start, end]``."""
        return self._dicts(
            "SELECT symbol, ts, bar_index, cash, qty, position_value, equity "
            "FROM chain_book_equity WHERE agent_id = %(a)s "
            "AND (%(s)s::timestamptz IS NULL OR ts >= %(s)s) "
            "AND (%(e)s::timestamptz IS NULL OR ts <= %(e)s) ORDER BY symbol, ts",
            {"a": agent_id, "s": start, "e": end},
        )

    def equity_snapshots(self, agent_id: UUID) -> list[dict[str, Any]]:
        """The agent's portfolio equity curve."""
        return self._dicts(
            "SELECT ts, cash, positions_value, equity FROM equity_snapshots WHERE agent_id = %s "
            "ORDER BY ts",
            (agent_id,),
        )

    def positions(self, agent_id: UUID) -> list[dict[str, Any]]:
        """The ledger projection's positions of the agent."""
        return self._dicts(
            "SELECT symbol, qty, avg_price, realized_pnl, fees_paid, lots, last_price, fill_seq "
            "FROM positions WHERE agent_id = %s ORDER BY symbol",
            (agent_id,),
        )

    def cash_balance(self, agent_id: UUID) -> Decimal:
        """The agent's cash per the cash ledger."""
        return self.cash_balances([agent_id]).get(agent_id, Decimal(0))


def _event_json(event: Any) -> str:
    return str(event.model_dump_json())


class PostgresBulkDelivery:
    """Bulk delivery bookkeeping for :class:`stocktrade.services.chain_worker.BulkChainWorker`:
    the same ``processed_events`` and ``outbox`` tables as the per-event delivery service,
    touched with one statement per batch.

    Args:
        conn: the worker's connection (autocommit; each batch is one transaction block).
    """

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def transaction(self) -> Any:
        from contextlib import contextmanager

        @contextmanager
        def tx() -> Any:
            with self.conn.transaction():
                yield self.conn

        return tx()

    @staticmethod
    def claim_many(conn: psycopg.Connection, handler: str, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        rows = conn.execute(
            "INSERT INTO processed_events (handler, event_id) SELECT %s, unnest(%s::text[]) "
            "ON CONFLICT DO NOTHING RETURNING event_id",
            (handler, list(event_ids)),
        ).fetchall()
        return {r[0] for r in rows}

    @staticmethod
    def add_outbox_many(conn: psycopg.Connection, events: Sequence[Any]) -> None:
        from stocktrade.schemas.events import event_attributes

        if not events:
            return
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO outbox (event_id, topic, ordering_key, payload, attributes) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING",
                [
                    (
                        e.event_id,
                        e.TOPIC.value,
                        e.ordering_key,
                        Jsonb(e, dumps=_event_json),
                        Jsonb(event_attributes(e)),
                    )
                    for e in events
                ],
            )

    @staticmethod
    def take_outbox(conn: psycopg.Connection, limit: int) -> list[tuple[int, str, str]]:
        rows = conn.execute(
            "SELECT id, event_id, topic FROM outbox WHERE published_at IS NULL "
            "AND (claimed_until IS NULL OR claimed_until < clock_timestamp()) "
            "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
            (limit,),
        ).fetchall()
        return [(int(r[0]), r[1], r[2]) for r in rows]

    @staticmethod
    def payloads(conn: psycopg.Connection, ids: Sequence[int]) -> dict[int, Any]:
        rows = conn.execute(
            "SELECT id, payload FROM outbox WHERE id = ANY(%s)", (list(ids),)
        ).fetchall()
        return {int(r[0]): r[1] for r in rows}

    @staticmethod
    def mark_published(conn: psycopg.Connection, ids: Sequence[int]) -> None:
        if ids:
            conn.execute(
                "UPDATE outbox SET published_at = now(), claimed_until = NULL WHERE id = ANY(%s)",
                (list(ids),),
            )

    @staticmethod
    def is_permanent(exc: BaseException) -> bool:
        from pydantic import ValidationError as PydanticValidationError

        from stocktrade.adapters.postgres.delivery import PostgresDeliveryStore
        from stocktrade.errors import PermanentError, ValidationError

        if isinstance(exc, PermanentError | ValidationError | PydanticValidationError):
            return True
        return PostgresDeliveryStore.classify_error(exc) == "permanent"
