"""Agents (baselines and policy versions, each with its own books), the decision log, and a
model promotion reaching the live policy."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from stocktrade.adapters.postgres.agents import PostgresAgentStore
from stocktrade.adapters.postgres.chain import PostgresChainStore
from stocktrade.errors import ConflictError, ValidationError
from stocktrade.schemas.events import ModelPromoted
from stocktrade.services.agents import AgentSpec, create_agent, policy_agent_spec
from stocktrade.services.decision_log import decision_log, format_entry
from tests.integration.chain_support import (
    check_ledger,
    make_agents,
    real_bars,
    register_policy,
    store_bars,
    wire,
)


def test_an_agent_gets_one_book_per_symbol_with_the_backtest_cash_split(db_conn: Any) -> None:
    store = PostgresAgentStore(db_conn)
    agent = create_agent(
        store,
        AgentSpec(
            name="trio",
            strategy="sma",
            symbols=("A", "B", "C"),
            params={"fast": "5", "slow": 20},
            initial_cash=Decimal("100000"),
        ),
    )
    assert agent.strategy == "sma_crossover" and agent.kind == "baseline"
    books = PostgresChainStore(db_conn).books(agent.id)
    assert [(b.symbol, b.cash) for b in books] == [
        ("A", Decimal("33333.34")),
        ("B", Decimal("33333.33")),
        ("C", Decimal("33333.33")),
    ]
    ledger = db_conn.execute(
        "SELECT kind, amount, balance FROM cash_ledger WHERE agent_id = %s", (agent.id,)
    ).fetchall()
    assert ledger == [("deposit", Decimal("100000"), Decimal("100000"))]
    with pytest.raises(ConflictError, match="already has an agent named 'trio'"):
        create_agent(store, AgentSpec(name="trio", strategy="buy_and_hold", symbols=("A",)))


def test_a_bad_agent_is_refused_with_every_problem_named(db_conn: Any) -> None:
    store = PostgresAgentStore(db_conn)
    with pytest.raises(ValidationError) as err:
        create_agent(
            store,
            AgentSpec(
                name="x", strategy="macd_magic", symbols=("A", "A"), costs={"commission_bps": "-1"}
            ),
        )
    message = str(err.value)
    assert "unknown strategy 'macd_magic'" in message
    assert "symbols must not repeat" in message
    assert "commission_bps must be >= 0" in message
    assert db_conn.execute("SELECT count(*) FROM agents").fetchone()[0] == 0


def test_the_decision_log_records_market_state_policy_output_risk_checks_and_orders(
    db_conn: Any,
) -> None:
    bars = real_bars(("AAPL", "MSFT"), "2014-03-01", "2014-04-30")
    store_bars(db_conn, bars)
    agents = make_agents(db_conn)
    wire(db_conn).replay(bars)
    store = PostgresChainStore(db_conn)
    rsi = agents["rsi"]
    start, end = datetime(2014, 4, 1, tzinfo=UTC), datetime(2014, 4, 15, tzinfo=UTC)
    entries = decision_log(store, rsi.id, start, end, symbol="AAPL")
    assert entries and all(start <= e.bar_ts <= end and e.symbol == "AAPL" for e in entries)
    assert [e.bar_number for e in entries] == sorted(e.bar_number for e in entries)
    e = entries[-1]
    assert set(e.market_state["features"]) >= {"rsi_14", "sma_50", "macd", "vol_20"}
    assert e.market_state["bar"]["close"] == str(
        next(b.close for b in bars if b.ts == e.bar_ts and b.symbol == "AAPL")
    )
    assert {"position_qty", "cash", "equity", "target_in_force"} <= set(e.strategy_state)
    assert e.policy_output["strategy"] == "rsi_mean_reversion"
    assert [c["code"] for c in e.risk_checks] == [
        "WARMUP",
        "HALTED",
        "KILL_SWITCH",
        "SHORT_NOT_ALLOWED",
        "THROTTLE_MIN_BARS",
        "THROTTLE_MAX_PER_DAY",
    ]
    assert all(c["reason"] for c in e.risk_checks)
    assert e.latencies["backend"] == "python-rules" and e.latencies["inference_us"] >= 0
    with_orders = [x for x in decision_log(store, rsi.id) if x.order_id]
    assert with_orders and all(x.order and x.order["status"] == "filled" for x in with_orders)
    assert "order filled" in format_entry(with_orders[0])
    throttled = [
        x
        for x in decision_log(store, rsi.id)
        if any(c["code"] == "THROTTLE_MIN_BARS" for c in x.failed_checks)
    ]
    for x in throttled:  # a throttled decision says why and places no order
        assert "throttled" in x.failed_checks[0]["reason"] and x.order_id is None
    with pytest.raises(ValidationError, match="start must be on or before end"):
        decision_log(store, rsi.id, end, start)


def test_a_promoted_model_version_reaches_the_policy_agent_on_its_next_bar(
    db_conn: Any, tmp_path: Path
) -> None:
    history = real_bars(("AAPL",), "2013-01-01", "2013-12-31")
    bars = real_bars(("AAPL",), "2014-01-01", "2014-05-31")
    store_bars(db_conn, history + bars)
    v1 = register_policy(db_conn, tmp_path, history, version=1, seed=3)
    store = PostgresAgentStore(db_conn)
    agent = create_agent(store, policy_agent_spec(v1, name="ppo", symbols=("AAPL",)))
    harness = wire(db_conn)
    half = len(bars) // 2
    harness.replay(bars[:half])
    assert v1.id in harness.engine.runtimes  # type: ignore[operator]
    v2 = register_policy(db_conn, tmp_path, history, version=2, seed=9, status="registered")
    db_conn.execute("UPDATE model_versions SET status = 'retired' WHERE id = %s", (v1.id,))
    db_conn.execute("UPDATE model_versions SET status = 'promoted' WHERE id = %s", (v2.id,))
    event = ModelPromoted(
        model_version_id=v2.id,
        agent_name="ppo-test",
        version=2,
        uri_onnx=v2.uri_onnx,
        sha256=v2.sha256,
        promoted_at=datetime(2014, 3, 1, tzinfo=UTC),
    )
    harness.bus.publish("model-promoted", event)
    assert store.get(agent.id).model_version_id == v2.id
    assert v1.id not in harness.engine.runtimes  # type: ignore[operator]
    harness.replay(bars[half:])
    versions = db_conn.execute(
        "SELECT model_version_id, count(*), min(bar_ts), max(bar_ts) FROM signals "
        "GROUP BY 1 ORDER BY 3"
    ).fetchall()
    assert [(v[0], v[1]) for v in versions] == [(v1.id, half), (v2.id, len(bars) - half)]
    probs = db_conn.execute(
        "SELECT count(*) FROM decisions WHERE policy_output->'probs' IS NOT NULL "
        "AND jsonb_typeof(policy_output->'probs') = 'array'"
    ).fetchone()[0]
    assert probs > 0
    check_ledger(db_conn)
