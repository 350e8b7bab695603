"""The backtest job end to end on real daily bars in Postgres.

The job runs as Cloud Run would start it, through the subprocess launcher (same entry point,
same env vars); the request is validated before anything is written or computed, and every
outcome lands in the run row.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from stocktrade.adapters.local.launcher import SubprocessJobLauncher
from stocktrade.adapters.local.object_store import LocalObjectStore
from stocktrade.adapters.postgres.bars import PostgresBarRepository
from stocktrade.adapters.postgres.runs import PostgresRunRepository
from stocktrade.backtest.config import BacktestConfig
from stocktrade.backtest.engine import run_backtest
from stocktrade.data.csv_bars import read_bars_csv
from stocktrade.domain.costs import CostModel
from stocktrade.domain.runs import RunStatus
from stocktrade.errors import ValidationError
from stocktrade.services.backtest_runs import execute_backtest_run, submit_backtest
from stocktrade.strategies import SmaCrossover
from tests.conftest import data_file

pytestmark = pytest.mark.integration

SYMBOLS = ("AAPL", "MSFT", "JPM")
ARTIFACTS = {
    "equity.csv",
    "orders.csv",
    "trades.csv",
    "metrics.json",
    "config.yaml",
    "report.html",
    "job.log",
}
REQUEST: dict[str, Any] = {
    "strategy": "sma_crossover",
    "params": {"fast": 10, "slow": 30},
    "symbols": ["AAPL", "MSFT"],
    "from": "2013-01-01",
    "to": "2015-12-31",
    "costs": {"commission_bps": "5", "slippage_bps": "2"},
}


def write_subset_csv(folder: Path) -> Path:
    """AAPL, MSFT and JPM rows of the real StockNet file, as a bar CSV in ``folder``."""
    source = data_file("daily_us_stocks_stocknet.csv")
    lines = source.read_bytes().split(b"\n")
    wanted = {s.encode() for s in SYMBOLS}
    keep = [lines[0]] + [
        ln for ln in lines[1:] if ln.split(b",")[1:2] and ln.split(b",")[1] in wanted
    ]
    path = folder / "stocknet_subset.csv"
    path.write_bytes(b"\n".join(keep) + b"\n")
    return path


@pytest.fixture(scope="module")
def demo_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_subset_csv(tmp_path_factory.mktemp("bars"))


@pytest.fixture
def world(
    db_conn: psycopg.Connection, demo_csv: Path, tmp_path: Path, pg_url: str
) -> dict[str, Any]:
    bars = PostgresBarRepository(db_conn)
    bars.import_csv(demo_csv.read_bytes(), str(demo_csv), source="stocknet")
    store = LocalObjectStore(tmp_path / "objects")
    env = {
        "DATABASE_URL": pg_url,
        "STOCKTRADE_OBJECT_STORE_URL": store.root.as_uri(),
        "STOCKTRADE_ENV": "test",
    }
    return {
        "bars": bars,
        "runs": PostgresRunRepository(db_conn),
        "store": store,
        "env": env,
        "launcher": SubprocessJobLauncher(store, env=env),
    }


def run_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM runs").fetchone()
    assert row is not None
    return int(row[0])


def test_detached_job_writes_every_artifact_and_stores_metrics(
    world: dict[str, Any], demo_csv: Path
) -> None:
    runs, store, launcher = world["runs"], world["store"], world["launcher"]
    run = submit_backtest(REQUEST, runs=runs, bars=world["bars"], store=store, launcher=launcher)
    assert (
        run.status is RunStatus.QUEUED
        and run.execution
        and run.execution.startswith("backtest-local-")
    )
    assert launcher.wait(run.execution, timeout=120) == 0, store.get_bytes(
        f"runs/{run.id}/job.log"
    ).decode()

    done = runs.get(run.id)
    assert done.status is RunStatus.SUCCEEDED and done.progress == 1.0 and done.error is None
    assert done.execution == run.execution  # the job recorded the CLOUD_RUN_EXECUTION it saw
    assert {k.rsplit("/", 1)[1] for k in store.list(f"runs/{run.id}/")} == ARTIFACTS
    assert set(done.artifacts) == ARTIFACTS
    assert done.artifact_prefix == store.uri(f"runs/{run.id}/")

    # The same backtest on the CSV file gives the same money, to the last digit.
    csv = read_bars_csv(demo_csv)
    expected = run_backtest(
        {s: csv[s] for s in ("AAPL", "MSFT")},
        SmaCrossover(10, 30),
        BacktestConfig(
            start="2013-01-01",
            end="2015-12-31T23:59:59",
            costs=CostModel(commission_bps=Decimal(5), slippage_bps=Decimal(2)),
        ),
    )
    assert done.final_equity == expected.final_equity.quantize(Decimal("1e-10"))
    assert done.initial_cash == Decimal("100000")
    assert done.metrics is not None
    assert done.metrics["n_trades"] == len(expected.trades) > 0
    assert done.metrics["sharpe"] == pytest.approx(expected.metrics["sharpe"], rel=1e-12)

    document = json.loads(store.get_bytes(f"runs/{run.id}/metrics.json"), parse_float=Decimal)
    assert document["metrics"]["final_equity"] == expected.final_equity
    assert set(document["by_symbol"]) == {"AAPL", "MSFT"}
    equity_rows = store.get_bytes(f"runs/{run.id}/equity.csv").decode().splitlines()
    assert equity_rows[0] == "ts,cash,position_value,equity" and len(equity_rows) == 1 + 756
    assert equity_rows[1].startswith("2013-01-02T00:00:00Z,")
    trades_rows = store.get_bytes(f"runs/{run.id}/trades.csv").decode().splitlines()
    assert len(trades_rows) == 1 + len(expected.trades)
    snapshot = yaml.safe_load(store.get_bytes(f"runs/{run.id}/config.yaml"))
    assert snapshot["request"]["params"] == {"fast": 10, "slow": 30}
    assert snapshot["strategy"]["params"]["fast"] == 10
    assert snapshot["engine"]["costs"]["commission_bps"] == "5"
    assert snapshot["data"]["symbols"]["AAPL"] == {
        "first": "2013-01-02T00:00:00Z",
        "last": "2015-12-31T00:00:00Z",
        "bars": 756,
    }
    assert snapshot["execution"]["task_count"] == 1 and snapshot["versions"]["numpy"]
    job_log = store.get_bytes(f"runs/{run.id}/job.log").decode()
    assert f"launch {run.execution}" in job_log and "backtest job finished" in job_log
    assert "<svg" in store.get_bytes(f"runs/{run.id}/report.html").decode()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"symbols": ["AAPL", "NOPE"]}, r"unknown symbol\(s\) \['NOPE'\]"),
        ({"from": "2020-01-01", "to": "2020-12-31"}, "no 1d bars for AAPL between 2020-01-01"),
        ({"costs": {"commission_bps": "-1"}}, "commission_bps must be >= 0"),
        ({"from": "2015-01-01", "to": "2014-01-01"}, "the date range is empty"),
        (
            {"from": "2015-01-03", "to": "2015-01-04"},
            "no 1d bars for AAPL between 2015-01-03 and 2015-01-04",
        ),
        ({"strategy": "moon_phase"}, "unknown strategy 'moon_phase'"),
        ({"params": {"fast": 30, "slow": 10}}, "need integer windows 1 <= fast < slow"),
        ({"params": {"fats": 10}}, r"unknown parameter\(s\) \['fats'\]"),
        ({"initial_cash": "-5"}, "initial_cash must be a finite amount > 0"),
    ],
)
def test_a_bad_request_is_rejected_before_anything_is_written(
    world: dict[str, Any], change: dict[str, Any], message: str
) -> None:
    request = {**REQUEST, **change}
    with pytest.raises(ValidationError, match=message):
        submit_backtest(
            request,
            runs=world["runs"],
            bars=world["bars"],
            store=world["store"],
            launcher=world["launcher"],
        )
    assert run_count(world["runs"].conn) == 0
    assert world["store"].list() == []


def test_a_stored_bad_request_fails_the_job_before_any_work(world: dict[str, Any]) -> None:
    runs, store, launcher = world["runs"], world["store"], world["launcher"]
    # A request accepted earlier whose symbol has since gone (or that bypassed the API).
    run = runs.create("backtest", {**REQUEST, "symbols": ["GONE"]})
    execution = launcher.launch("backtest", run.id)
    assert launcher.wait(execution, timeout=120) == 2
    failed = runs.get(run.id)
    assert failed.status is RunStatus.FAILED and failed.started_at is None
    assert failed.error is not None and "unknown symbol(s) ['GONE']" in failed.error
    assert store.list(f"runs/{run.id}/") == [f"runs/{run.id}/job.log"]


def test_a_cancel_request_stops_the_run_at_its_next_checkpoint(world: dict[str, Any]) -> None:
    runs, store = world["runs"], world["store"]
    run = submit_backtest(REQUEST, runs=runs, bars=world["bars"], store=store)

    def engine_cancelled_meanwhile(data: Any, strategy: Any, config: Any) -> Any:
        runs.request_cancel(run.id)  # the owner cancels while the engine runs
        return run_backtest(data, strategy, config)

    final = execute_backtest_run(
        run.id,
        runs=runs,
        bars=world["bars"],
        store=store,
        engine=engine_cancelled_meanwhile,
        heartbeat_seconds=0,
    )
    assert final.status is RunStatus.CANCELLED and final.finished_at is not None
    assert store.list(f"runs/{run.id}/") == []  # stopped before writing artifacts


def test_an_engine_error_fails_the_run_with_its_message(world: dict[str, Any]) -> None:
    runs = world["runs"]
    run = submit_backtest(REQUEST, runs=runs, bars=world["bars"], store=world["store"])

    def broken_engine(data: Any, strategy: Any, config: Any) -> Any:
        raise RuntimeError("numerical meltdown")

    with pytest.raises(RuntimeError, match="meltdown"):
        execute_backtest_run(
            run.id,
            runs=runs,
            bars=world["bars"],
            store=world["store"],
            engine=broken_engine,
            capture_log=True,
            heartbeat_seconds=0,
        )
    failed = runs.get(run.id)
    assert failed.status is RunStatus.FAILED and failed.error == "RuntimeError: numerical meltdown"
    log_text = world["store"].get_bytes(f"runs/{run.id}/job.log").decode()
    assert "numerical meltdown" in log_text and "Traceback" in log_text


def test_cli_backtest_runs_in_process_and_runs_commands_show_it(world: dict[str, Any]) -> None:
    env = {**os.environ, **world["env"]}
    base = [sys.executable, "-m", "stocktrade.cli"]
    ok = subprocess.run(
        [
            *base,
            "backtest",
            "--strategy",
            "rsi_mean_reversion",
            "--symbols",
            "JPM",
            "--from",
            "2013-01-01",
            "--to",
            "2015-12-31",
            "--param",
            "window=14",
            "--commission-bps",
            "5",
            "--cash",
            "25000",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "succeeded" in ok.stdout and "Sharpe ratio" in ok.stdout
    (run,) = world["runs"].list()
    assert run.status is RunStatus.SUCCEEDED and run.initial_cash == Decimal("25000")
    assert set(run.artifacts) == ARTIFACTS
    report = world["store"].path(f"runs/{run.id}/report.html")
    assert str(report) in ok.stdout.replace("\n", "") and report.is_file()

    bad = subprocess.run(
        [
            *base,
            "backtest",
            "--strategy",
            "sma_crossover",
            "--symbols",
            "JPMM",
            "--from",
            "2013-01-01",
            "--to",
            "2015-12-31",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "unknown symbol(s) ['JPMM']" in bad.stderr and "did you mean JPM" in bad.stderr
    assert len(world["runs"].list()) == 1

    listed = subprocess.run(
        [*base, "runs", "list"], capture_output=True, text=True, env=env, timeout=120
    )
    assert listed.returncode == 0 and run.id[:8] in listed.stdout and "succeeded" in listed.stdout
    cancel = subprocess.run(
        [*base, "runs", "cancel", run.id[:8]], capture_output=True, text=True, env=env, timeout=120
    )
    assert cancel.returncode == 1 and "already succeeded" in cancel.stderr


def test_a_launch_failure_keeps_the_accepted_request_as_a_failed_run(world: dict[str, Any]) -> None:
    from stocktrade.errors import TransientError

    seen: list[str] = []

    class DownLauncher:
        def launch(self, kind: str, run_id: str, *, args: Any = ()) -> str:
            seen.append(world["runs"].get(run_id).status.value)  # the row exists before launch
            raise ConnectionError("Cloud Run API unreachable")

    with pytest.raises(TransientError, match="recorded but its job could not start"):
        submit_backtest(
            REQUEST,
            runs=world["runs"],
            bars=world["bars"],
            store=world["store"],
            launcher=DownLauncher(),
        )
    (run,) = world["runs"].list()
    assert seen == ["queued"]
    assert run.status is RunStatus.FAILED and "Cloud Run API unreachable" in (run.error or "")
    assert run.config["symbols"] == REQUEST["symbols"] and run.config["start"] == "2013-01-01"
