"""Shared arrangements of the chain tests: real bars, agents, a wired in-process chain, and
what a run left in the database (to compare runs and check the ledger).

Not a test module (no ``test_`` prefix); the chain test files import it.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from stocktrade.adapters.local.bus import InProcessEventBus
from stocktrade.adapters.market.replay import BarReplay, bars_from_csv
from stocktrade.adapters.postgres.agents import PostgresAgentStore
from stocktrade.adapters.postgres.bars import PostgresBarRepository
from stocktrade.adapters.postgres.chain import PostgresChainStore
from stocktrade.adapters.postgres.delivery import PostgresDeliveryStore
from stocktrade.domain.bars import Bar
from stocktrade.domain.ledger import Ledger
from stocktrade.domain.orders import Fill, Side
from stocktrade.services import chain
from stocktrade.services.agents import AgentSpec, PolicyRuntimes, create_agent, policy_agent_spec
from stocktrade.services.chain_engine import ChainEngine
from stocktrade.services.delivery import DeliveryService
from tests.conftest import data_file

SYMBOLS = ("AAPL", "MSFT")
COSTS = {"commission_bps": "5", "slippage_bps": "2", "slippage_range_frac": "0.05"}
#: (name, strategy, params, risk)
BASELINES: tuple[tuple[str, str, dict[str, Any], dict[str, Any]], ...] = (
    ("sma", "sma_crossover", {"fast": 5, "slow": 20}, {}),
    (
        "rsi",
        "rsi_mean_reversion",
        {"window": 14, "lower": 40, "upper": 60},
        {"min_bars_between_orders": 2},
    ),
    ("hold", "buy_and_hold", {}, {"max_daily_loss_pct": "0.04"}),
)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def real_bars(symbols: tuple[str, ...], start: str, end: str) -> list[Bar]:
    """Real daily bars (StockNet CSV), exact decimal prices, in publication order."""
    path = data_file("daily_us_stocks_stocknet.csv")
    return bars_from_csv(path, symbols, utc(start), utc(end), source="stocknet")


def store_bars(conn: Any, bars: list[Bar]) -> None:
    """Put bars into the bars table (as an import would), so the symbols are known."""
    with conn.transaction():
        PostgresChainStore(conn).upsert_bars(bars)


def make_agents(
    conn: Any, *, policy: Any = None, symbols: tuple[str, ...] = SYMBOLS
) -> dict[str, Any]:
    """The three baseline agents (and a policy agent for ``policy``), by name."""
    store = PostgresAgentStore(conn)
    out = {}
    for name, strategy, params, risk in BASELINES:
        spec = AgentSpec(
            name=name,
            strategy=strategy,
            params=params,
            symbols=symbols,
            initial_cash=Decimal("50000"),
            costs=COSTS,
            risk=risk,
        )
        out[name] = create_agent(store, spec)
    if policy is not None:
        spec = policy_agent_spec(
            policy, name="policy", symbols=symbols, initial_cash=Decimal("50000"), costs=COSTS
        )
        out["policy"] = create_agent(store, spec)
    return out


def build_mlp_onnx(obs_dim: int, hidden: int = 16, seed: int = 3) -> bytes:
    """A small random MLP policy obeying the ONNX I/O contract (obs -> logits, probs)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 1.5 / np.sqrt(obs_dim), (obs_dim, hidden)).astype(np.float32)
    w1[-1] *= 4.0  # the position slot: the action depends on the position held
    b1 = rng.normal(0, 0.1, hidden).astype(np.float32)
    w2 = rng.normal(0, 1.5 / np.sqrt(hidden), (hidden, 3)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["obs", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", obs_dim])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3]),
        ],
        [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def register_policy(
    conn: Any,
    tmp: Path,
    fit_bars: list[Bar],
    *,
    version: int = 1,
    seed: int = 3,
    status: str = "promoted",
) -> Any:
    """Fit an observation spec on ``fit_bars``, write a random MLP policy and register it."""
    from stocktrade.quant.features import FeatureSpec, compute_features
    from stocktrade.quant.observation import ObservationSpec

    spec = FeatureSpec()
    close = np.array([float(b.close) for b in fit_bars])
    vol = np.array([float(b.volume) for b in fit_bars])
    feats = compute_features(close, close, close, close, vol, spec)
    obs_spec = ObservationSpec(window=4).fit(feats, spec.names(), 0, len(close))
    data = build_mlp_onnx(obs_spec.obs_dim, seed=seed)
    path = tmp / f"policy_v{version}.onnx"
    path.write_bytes(data)
    manifest = {
        "feature_spec": spec.to_dict(),
        "observation_spec": obs_spec.to_dict(),
        "env_config": {"allow_short": False, "position_size": 1.0},
        "data": {"timeframe": "1d"},
    }
    row = conn.execute(
        "INSERT INTO model_versions (agent_name, version, uri_onnx, manifest, sha256, status, "
        "promoted_at) VALUES ('ppo-test', %s, %s, %s, %s, %s, now()) RETURNING id",
        (version, path.as_uri(), json.dumps(manifest), hashlib.sha256(data).hexdigest(), status),
    ).fetchone()
    return PostgresAgentStore(conn).model_version(row[0])


@dataclass
class Harness:
    """The chain on the in-process bus: delivery service, engine, replay."""

    conn: Any
    bus: InProcessEventBus
    delivery: DeliveryService
    deps: SimpleNamespace

    @property
    def engine(self) -> ChainEngine:
        return self.deps.chain_engine  # type: ignore[no-any-return]

    def restart(self) -> None:
        """A new process: fresh caches (strategies, runtimes); the database survives."""
        self.deps.chain_engine = ChainEngine(
            PolicyRuntimes(chain.model_reader()), fault=self.engine.fault
        )

    def replay(self, bars: list[Bar], **kw: Any) -> None:
        BarReplay(self.bus, **kw).run(bars)


def wire(conn: Any, bus: InProcessEventBus | None = None, **delivery_kw: Any) -> Harness:
    bus = bus or InProcessEventBus()
    deps = SimpleNamespace(chain_engine=ChainEngine(PolicyRuntimes(chain.model_reader())))
    delivery = DeliveryService(PostgresDeliveryStore(conn), bus, deps=deps, **delivery_kw)
    chain.subscribe(bus, delivery)
    return Harness(conn, bus, delivery, deps)


def load_bars(conn: Any) -> Any:
    return PostgresBarRepository(conn).load


def outcome(conn: Any) -> dict[str, Any]:
    """What a run left, keyed by agent name (ids differ between runs): orders, fills,
    positions, cash, books, equity."""

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in conn.execute(sql).fetchall()]

    def no_ids(rows_: list[tuple[Any, ...]], col: int) -> list[tuple[Any, ...]]:
        # Order ids derive from the agent id, which differs between runs.
        return [
            (
                *r[:col],
                [{k: v for k, v in lot.items() if k != "order_id"} for lot in r[col]],
                *r[col + 1 :],
            )
            for r in rows_
        ]

    return {
        "orders": rows(
            "SELECT a.name, o.symbol, o.bar_ts, o.side, o.qty, o.target_fraction, o.status, "
            "o.fill_ts, o.reason FROM orders o JOIN agents a ON a.id = o.agent_id "
            "ORDER BY 1, 2, 3"
        ),
        "fills": rows(
            "SELECT a.name, f.symbol, f.ts, f.side, f.qty, f.price, f.fee, f.seq FROM fills f "
            "JOIN agents a ON a.id = f.agent_id ORDER BY 1, 2, 3"
        ),
        "positions": no_ids(
            rows(
                "SELECT a.name, p.symbol, p.qty, p.realized_pnl, p.fees_paid, p.lots, p.fill_seq "
                "FROM positions p JOIN agents a ON a.id = p.agent_id ORDER BY 1, 2"
            ),
            5,
        ),
        "cash": rows(
            "SELECT DISTINCT ON (a.name) a.name, c.balance FROM cash_ledger c "
            "JOIN agents a ON a.id = c.agent_id ORDER BY a.name, c.id DESC"
        ),
        "cash_sums": rows(
            "SELECT a.name, c.kind, sum(c.amount), count(*) FROM cash_ledger c "
            "JOIN agents a ON a.id = c.agent_id GROUP BY 1, 2 ORDER BY 1, 2"
        ),
        "books": no_ids(
            rows(
                "SELECT a.name, b.symbol, b.cash, b.lots, b.realised_pnl, b.bars_seen, "
                "b.last_bar_ts, b.decided_ts, b.risk_state, b.pending_order - 'client_order_id', "
                "b.fill_seq FROM chain_books b JOIN agents a ON a.id = b.agent_id ORDER BY 1, 2"
            ),
            3,
        ),
        "equity": rows(
            "SELECT a.name, e.ts, e.cash, e.positions_value, e.equity FROM equity_snapshots e "
            "JOIN agents a ON a.id = e.agent_id ORDER BY 1, 2"
        ),
        "decisions": rows(
            "SELECT a.name, d.symbol, d.bar_ts, d.order_id IS NOT NULL, d.sizing->>'approved_target' "
            "FROM decisions d JOIN agents a ON a.id = d.agent_id ORDER BY 1, 2, 3"
        ),
        "trades": rows(
            "SELECT a.name, t.symbol, t.exit_ts, t.qty, t.pnl FROM chain_trades t "
            "JOIN agents a ON a.id = t.agent_id ORDER BY 1, 2, 3, t.piece"
        ),
    }


def check_ledger(conn: Any) -> dict[str, int]:
    """The accounting identities every quiescent state must satisfy; raises AssertionError.

    Per book: the fills replayed through a fresh Decimal ledger give the book's cash, lots and
    realised P&L, the identity cash + marks == initial + realised + unrealised - open fees holds
    exactly at the last close, and the ledger projection (positions) holds the same position,
    lots and P&L with every fill applied once. Per agent: the cash ledger balance equals the
    sum of its books' cash and is the running sum of its rows. Every fill belongs to a filled
    order, once.
    """
    books = conn.execute(
        "SELECT b.agent_id, b.symbol, b.initial_cash, b.cash, b.lots, b.realised_pnl, b.fill_seq, "
        "p.qty, p.lots, p.realized_pnl, p.fill_seq, "
        "(SELECT close FROM bars WHERE symbol = b.symbol AND timeframe = b.timeframe "
        " AND ts = b.last_bar_ts) FROM chain_books b JOIN positions p "
        "ON p.agent_id = b.agent_id AND p.symbol = b.symbol"
    ).fetchall()
    fills = defaultdict(list)
    for r in conn.execute(
        "SELECT agent_id, symbol, id, client_order_id, side, qty, price, fee, ts, seq FROM fills "
        "ORDER BY agent_id, symbol, seq"
    ):
        fills[(r[0], r[1])].append(r)
    n_fills = 0
    cash_by_agent: dict[Any, Decimal] = defaultdict(Decimal)
    for (
        agent_id,
        symbol,
        initial,
        cash,
        lots,
        realised,
        seq,
        p_qty,
        p_lots,
        p_realised,
        p_seq,
        close,
    ) in books:
        ledger = Ledger(initial)
        book_fills = fills[(agent_id, symbol)]
        assert [f[9] for f in book_fills] == list(range(1, len(book_fills) + 1)), "fill seq gap"
        for f in book_fills:
            ledger.apply(Fill(f[2], f[3], symbol, Side(f[4]), f[5], f[6], f[7], f[8]))
        n_fills += len(book_fills)
        assert ledger.cash == cash, f"{symbol} cash {cash} != fills' {ledger.cash}"
        assert ledger.realised_pnl == realised
        assert seq == len(book_fills) == p_seq, "fills applied once each to the projection"
        qty = ledger.position(symbol)
        assert p_qty == qty
        assert sum(Decimal(lot["qty"]) * (1 if lot["side"] == "buy" else -1) for lot in lots) == qty
        assert [(x["qty"], x["price"]) for x in lots] == [(x["qty"], x["price"]) for x in p_lots]
        assert p_realised == realised
        if close is not None:
            ledger.check_invariant({symbol: close})
        cash_by_agent[agent_id] += cash
    running = conn.execute(
        "SELECT agent_id, amount, balance FROM cash_ledger ORDER BY agent_id, id"
    ).fetchall()
    last: dict[Any, Decimal] = {}
    total: dict[Any, Decimal] = defaultdict(Decimal)
    for agent_id, amount, balance in running:
        total[agent_id] += amount
        assert total[agent_id] == balance, "cash ledger balance is its running sum"
        last[agent_id] = balance
    for agent_id, cash in cash_by_agent.items():
        assert last[agent_id] == cash, f"agent cash ledger {last[agent_id]} != books {cash}"
    dup = conn.execute(
        "SELECT count(*) FROM (SELECT client_order_id FROM fills GROUP BY 1 HAVING count(*) > 1) x"
    ).fetchone()[0]
    assert dup == 0, "an order filled twice"
    bad = conn.execute(
        "SELECT count(*) FROM fills f JOIN orders o USING (client_order_id) "
        "WHERE o.status <> 'filled'"
    ).fetchone()[0]
    assert bad == 0, "a fill of an order not marked filled"
    return {"books": len(books), "fills": n_fills}


def reset(conn: Any) -> None:
    """Empty every table but users and migrations (a second run in the same test)."""
    tables = [
        r[0]
        for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        if r[0] not in {"schema_migrations", "users"}
    ]
    conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
    chain.set_engine(None)
