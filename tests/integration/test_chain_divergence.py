"""The live chain trades exactly like the backtest: replayed real bars, three baselines and an
ONNX policy on two symbols, compared order by order, fill by fill, bar by bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stocktrade.adapters.postgres.chain import PostgresChainStore
from stocktrade.services import chain
from stocktrade.services.agents import PolicyRuntimes
from stocktrade.services.divergence import divergence_report
from tests.integration.chain_support import (
    check_ledger,
    load_bars,
    make_agents,
    real_bars,
    register_policy,
    store_bars,
    wire,
)

START, END = "2014-01-01", "2014-06-30"


@pytest.fixture
def replayed(db_conn: Any, tmp_path: Path) -> dict[str, Any]:
    history = real_bars(("AAPL",), "2013-01-01", "2013-12-31")
    bars = real_bars(("AAPL", "MSFT"), START, END)
    store_bars(db_conn, history + bars)
    model = register_policy(db_conn, tmp_path, history)
    agents = make_agents(db_conn, policy=model)
    harness = wire(db_conn)
    harness.replay(bars)
    return {"agents": agents, "bars": bars, "harness": harness}


def test_the_divergence_report_is_empty_for_every_agent_on_replayed_bars(
    db_conn: Any, replayed: dict[str, Any]
) -> None:
    store = PostgresChainStore(db_conn)
    runtimes = PolicyRuntimes(chain.model_reader())
    n_bars = len(replayed["bars"])
    fills = 0
    for name, agent in replayed["agents"].items():
        report = divergence_report(agent, store, load_bars(db_conn), runtimes=runtimes)
        assert report.ok, f"{name}: " + "\n".join(str(d) for d in report.differences[:10])
        assert report.bars == n_bars  # every bar of both symbols was decided and compared
        assert report.symbols == ("AAPL", "MSFT")
        assert report.chain_final_equity == report.backtest_final_equity
        fills += report.fills
        if name in ("sma", "rsi", "policy"):
            assert report.fills >= 4, f"{name} should trade on this period"
    assert fills >= 20
    assert check_ledger(db_conn)["fills"] == fills + _open_fills(db_conn)


def _open_fills(conn: Any) -> int:
    # fills whose order was decided before the period end but filled after it: none here
    return 0


def test_a_divergence_is_reported_when_the_chain_missed_a_fill(
    db_conn: Any, replayed: dict[str, Any]
) -> None:
    agent = replayed["agents"]["sma"]
    store = PostgresChainStore(db_conn)
    victim = db_conn.execute(
        "SELECT id, ts FROM fills WHERE agent_id = %s ORDER BY ts LIMIT 1", (agent.id,)
    ).fetchone()
    db_conn.execute("UPDATE fills SET price = price + 0.01 WHERE id = %s", (victim[0],))
    report = divergence_report(agent, store, load_bars(db_conn))
    assert not report.ok
    assert [(d.kind, d.field, d.ts) for d in report.differences] == [("fill", "price", victim[1])]


def test_the_leaderboard_scores_agents_with_the_backtest_metrics(
    db_conn: Any, replayed: dict[str, Any]
) -> None:
    from stocktrade.backtest.engine import run_backtest
    from stocktrade.services.agents import agent_backtest_config, build_agent_strategy

    store = PostgresChainStore(db_conn)
    agents = replayed["agents"]
    store.refresh_leaderboard([a.id for a in agents.values()])
    board = {row["name"]: row for row in store.leaderboard()}
    assert set(board) == set(agents)
    sma = agents["sma"]
    data = {
        s: load_bars(db_conn)(s, "1d", None, None).between(START, END + "T23:59")
        for s in sma.symbols
    }
    result = run_backtest(data, build_agent_strategy(sma), agent_backtest_config(sma))
    expected = result.metrics
    row = board["sma"]
    assert row["total_return"] == pytest.approx(expected["total_return"], rel=1e-12)
    assert row["sharpe"] == pytest.approx(expected["sharpe"], rel=1e-9)
    assert row["max_drawdown"] == pytest.approx(expected["max_drawdown"], rel=1e-9)
    assert row["trades"] == len(result.trades)
    assert row["equity"] == result.final_equity
