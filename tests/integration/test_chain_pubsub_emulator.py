"""End to end on the faithful local stack: real bars published to ``market-bars`` on the Pub/Sub
emulator come out as fills, through push subscriptions to four functions-framework servers
(on_bar, on_signal, on_order, on_fill), and the chain's record equals a backtest's."""

from __future__ import annotations

import time
from contextlib import ExitStack
from decimal import Decimal
from typing import Any

import pytest

from stocktrade.adapters.gcp.pubsub import PubSubEventBus
from stocktrade.adapters.postgres.agents import PostgresAgentStore
from stocktrade.adapters.postgres.chain import PostgresChainStore
from stocktrade.schemas.events import Bar as BarEvent
from stocktrade.schemas.events import Topic
from stocktrade.services.agents import AgentSpec, create_agent
from stocktrade.services.divergence import divergence_report
from tests.emulators import FunctionServer, PubSubEmulator
from tests.integration.chain_support import load_bars, real_bars, store_bars

pytestmark = [pytest.mark.integration, pytest.mark.emulator]

TARGETS = (("on_bar", "market-bars"), ("on_signal", "signals"), ("on_order", "orders"),
           ("on_fill", "fills"))


def wait_for(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def test_bars_published_to_market_bars_come_out_as_fills_equal_to_the_backtest(
    pubsub_emulator: PubSubEmulator, pg_url: str, db_conn: Any
) -> None:
    bars = real_bars(("MSFT",), "2014-01-02", "2014-02-14")
    store_bars(db_conn, bars[:1])  # the symbol is known, as after an import
    agent = create_agent(PostgresAgentStore(db_conn), AgentSpec(
        name="emu-sma", strategy="sma_crossover", params={"fast": 2, "slow": 3},
        symbols=("MSFT",), initial_cash=Decimal("10000"),
        costs={"commission_bps": "5", "slippage_bps": "2"},
    ))
    project = pubsub_emulator.new_project()
    env = pubsub_emulator.function_env(project, pg_url)
    with ExitStack() as stack:
        for target, topic in TARGETS:
            server = stack.enter_context(FunctionServer.start(target, env=env))
            pubsub_emulator.create_push_subscription(
                project, topic, server.push_endpoint(project, topic), min_backoff_s=1
            )
        bus = PubSubEventBus(project, emulator_host=pubsub_emulator.host)
        stack.callback(bus.close)

        def book() -> tuple[Any, int, int]:
            row = db_conn.execute(
                "SELECT b.decided_ts, b.fill_seq, coalesce(p.fill_seq, 0) FROM chain_books b "
                "LEFT JOIN positions p USING (agent_id, symbol) WHERE b.agent_id = %s",
                (agent.id,),
            ).fetchone()
            return row[0], int(row[1]), int(row[2])

        for bar in bars:  # one at a time: the emulator's push does not keep ordering keys
            bus.publish(Topic.MARKET_BARS, BarEvent.from_domain(bar))
            wait_for(lambda b=bar: (lambda d, f, a: d is not None and d >= b.ts and a >= f)(*book()),
                     30, f"the chain to decide {bar.ts:%Y-%m-%d} and apply its fills")

    fills = db_conn.execute(
        "SELECT count(*), count(DISTINCT client_order_id) FROM fills WHERE agent_id = %s",
        (agent.id,),
    ).fetchone()
    assert fills[0] >= 2 and fills[0] == fills[1]  # real fills, one per order, none doubled
    assert db_conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0
    report = divergence_report(agent, PostgresChainStore(db_conn), load_bars(db_conn))
    assert report.ok, report.summary()
