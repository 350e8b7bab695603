"""The whole local stack, as a user drives it: real bars imported, agents created, a replay
through the live chain, then the leaderboard, the decision log and the divergence report,
all through the ``stocktrade`` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tests.conftest import data_file


def run_cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKTRADE_")}
    env.update({"DATABASE_URL": database_url, "STOCKTRADE_ENV": "test", "COLUMNS": "160"})
    return subprocess.run(
        [sys.executable, "-m", "stocktrade.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_replayed_bars_flow_through_the_chain_to_leaderboard_decisions_and_no_divergence(
    pg_url: str, db_conn: Any
) -> None:
    path = data_file("daily_us_stocks_stocknet.csv")
    ok(run_cli("data", "import", str(path), database_url=pg_url))
    ok(
        run_cli(
            "chain",
            "agents",
            "create",
            "sma",
            "--strategy",
            "sma_crossover",
            "--param",
            "fast=5",
            "--param",
            "slow=20",
            "--symbols",
            "AAPL,MSFT",
            "--cost",
            "commission_bps=5",
            "--cash",
            "50000",
            database_url=pg_url,
        )
    )
    ok(
        run_cli(
            "chain",
            "agents",
            "create",
            "hold",
            "--strategy",
            "buy_and_hold",
            "--symbols",
            "AAPL,MSFT",
            database_url=pg_url,
        )
    )
    bad = run_cli(
        "chain",
        "agents",
        "create",
        "x",
        "--strategy",
        "nope",
        "--symbols",
        "AAPL",
        database_url=pg_url,
    )
    assert bad.returncode == 2 and "unknown strategy 'nope'" in bad.stderr

    replayed = ok(
        run_cli(
            "chain", "replay", "--from", "2015-09-01", "--to", "2015-12-31", database_url=pg_url
        )
    )
    n_bars = (
        2
        * db_conn.execute(
            "SELECT count(*) FROM bars WHERE symbol = 'AAPL' AND ts BETWEEN '2015-09-01' AND "
            "'2015-12-31T23:59:59Z'"
        ).fetchone()[0]
    )
    assert f"replayed {n_bars:,} bars (in-process)" in replayed
    decided = db_conn.execute("SELECT count(*) FROM decisions").fetchone()[0]
    assert decided == 2 * n_bars  # two agents, every bar of both symbols

    board = ok(run_cli("chain", "leaderboard", database_url=pg_url))
    assert "sma" in board and "hold" in board and "buy_and_hold" in board

    log = ok(
        run_cli(
            "chain",
            "decisions",
            "sma",
            "--symbol",
            "AAPL",
            "--from",
            "2015-12-01",
            "--limit",
            "3",
            "--json",
            database_url=pg_url,
        )
    )
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert len(entries) == 3 and entries[0]["bar_ts"].startswith("2015-12-01")
    assert {"market_state", "risk_checks", "sizing", "latencies"} <= set(entries[0])

    for agent in ("sma", "hold"):
        report = ok(run_cli("chain", "divergence", agent, database_url=pg_url))
        assert "no divergence" in report, report

    # Replaying the same bars again (bulk worker this time) changes nothing.
    again = ok(
        run_cli(
            "chain",
            "replay",
            "--from",
            "2015-09-01",
            "--to",
            "2015-12-31",
            "--bulk",
            database_url=pg_url,
        )
    )
    assert "(bulk)" in again
    assert db_conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == decided
