"""The live chain trades exactly like the backtest: replayed real bars, three baselines and an
ONNX policy on two symbols, compared order by order, fill by fill, bar by bar."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
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
    reset,
    store_bars,
    wire,
)

START, END = "2014-01-01", "2014-06-30"


@pytest.fixture(scope="module")
def replayed(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One replay shared by the module's tests (they only read what it left)."""
    conn = psycopg.connect(pg_url, autocommit=True)
    reset(conn)
    history = real_bars(("AAPL",), "2013-01-01", "2013-12-31")
    bars = real_bars(("AAPL", "MSFT"), START, END)
    store_bars(conn, history + bars)
    model = register_policy(conn, tmp_path_factory.mktemp("policy"), history)
    agents = make_agents(conn, policy=model)
    harness = wire(conn)
    harness.replay(bars)
    yield {"agents": agents, "bars": bars, "harness": harness, "conn": conn}
    reset(conn)
    conn.close()


@pytest.fixture
def conn(replayed: dict[str, Any]) -> Any:
    return replayed["conn"]


def test_the_divergence_report_is_empty_for_every_agent_on_replayed_bars(
    conn: Any, replayed: dict[str, Any]
) -> None:
    store = PostgresChainStore(conn)
    runtimes = PolicyRuntimes(chain.model_reader())
    n_bars = len(replayed["bars"])
    fills = 0
    for name, agent in replayed["agents"].items():
        report = divergence_report(agent, store, load_bars(conn), runtimes=runtimes)
        assert report.ok, f"{name}: " + "\n".join(str(d) for d in report.differences[:10])
        assert report.bars == n_bars  # every bar of both symbols was decided and compared
        assert report.symbols == ("AAPL", "MSFT")
        assert report.chain_final_equity == report.backtest_final_equity
        fills += report.fills
        if name in ("sma", "rsi", "policy"):
            assert report.fills >= 4, f"{name} should trade on this period"
    assert fills >= 20
    assert check_ledger(conn)["fills"] == fills


def test_a_divergence_is_reported_for_a_changed_fill_and_a_missing_bar(
    conn: Any, replayed: dict[str, Any]
) -> None:
    agent = replayed["agents"]["sma"]
    store = PostgresChainStore(conn)
    victim = conn.execute(
        "SELECT id, ts FROM fills WHERE agent_id = %s ORDER BY ts LIMIT 1", (agent.id,)
    ).fetchone()
    mark = conn.execute(
        "SELECT symbol, ts FROM chain_book_equity WHERE agent_id = %s ORDER BY ts DESC LIMIT 1",
        (agent.id,),
    ).fetchone()
    saved = conn.execute(
        "SELECT * FROM chain_book_equity WHERE agent_id = %s AND symbol = %s AND ts = %s",
        (agent.id, *mark),
    ).fetchone()
    try:
        conn.execute("UPDATE fills SET price = price + 0.01 WHERE id = %s", (victim[0],))
        conn.execute(
            "DELETE FROM chain_book_equity WHERE agent_id = %s AND symbol = %s AND ts = %s",
            (agent.id, *mark),
        )
        report = divergence_report(agent, store, load_bars(conn))
    finally:  # the module's other tests read the same replay
        conn.execute("UPDATE fills SET price = price - 0.01 WHERE id = %s", (victim[0],))
        conn.execute("INSERT INTO chain_book_equity VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", saved)
    assert not report.ok
    assert sorted((d.kind, d.field, d.ts) for d in report.differences) == sorted(
        [("fill", "price", victim[1]), ("bar", "missing in chain", mark[1])]
    )


def test_the_leaderboard_scores_agents_with_the_backtest_metrics(
    conn: Any, replayed: dict[str, Any]
) -> None:
    from stocktrade.backtest.engine import run_backtest
    from stocktrade.services.agents import agent_backtest_config, build_agent_strategy

    store = PostgresChainStore(conn)
    agents = replayed["agents"]
    store.refresh_leaderboard([a.id for a in agents.values()])
    board = {row["name"]: row for row in store.leaderboard()}
    assert set(board) == set(agents)
    sma = agents["sma"]
    data = {
        s: load_bars(conn)(s, "1d", None, None).between(START, END + "T23:59") for s in sma.symbols
    }
    result = run_backtest(data, build_agent_strategy(sma), agent_backtest_config(sma))
    expected = result.metrics
    row = board["sma"]
    assert row["total_return"] == pytest.approx(expected["total_return"], rel=1e-12)
    assert row["sharpe"] == pytest.approx(expected["sharpe"], rel=1e-9)
    assert row["max_drawdown"] == pytest.approx(expected["max_drawdown"], rel=1e-9)
    assert row["trades"] == len(result.trades)
    assert row["equity"] == result.final_equity
