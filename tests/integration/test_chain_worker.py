"""The bulk worker (whole bursts per transaction) trades exactly like the per-event chain,
rolls a crashed burst back whole, and dead-letters a poison event without losing the rest."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import groupby
from types import SimpleNamespace
from typing import Any

import pytest

from stocktrade.adapters.local.bus import InProcessEventBus, SimulatedCrashError
from stocktrade.adapters.postgres.chain import PostgresBulkDelivery, PostgresChainStore
from stocktrade.adapters.postgres.delivery import PostgresDeliveryStore
from stocktrade.schemas.events import Bar as BarEvent
from stocktrade.services import chain
from stocktrade.services.agents import PolicyRuntimes
from stocktrade.services.chain_engine import ChainEngine
from stocktrade.services.chain_worker import BulkChainWorker
from stocktrade.services.delivery import DeliveryService
from tests.integration.chain_support import (
    check_ledger,
    make_agents,
    outcome,
    real_bars,
    reset,
    store_bars,
    wire,
)

START, END = "2014-03-01", "2014-05-15"


def bursts(bars: list[Any]) -> list[list[BarEvent]]:
    return [[BarEvent.from_domain(b) for b in g] for _ts, g in groupby(bars, key=lambda b: b.ts)]


def worker(conn: Any, *, fuse: bool = True, fault: Any = None) -> BulkChainWorker:
    engine = ChainEngine(PolicyRuntimes(chain.model_reader()), fault=fault)
    delivery = DeliveryService(
        PostgresDeliveryStore(conn),
        InProcessEventBus(),
        deps=SimpleNamespace(chain_engine=engine),
        relay_after_handle=False,
    )
    return BulkChainWorker(
        PostgresBulkDelivery(conn),
        PostgresChainStore,
        engine,
        fallback=lambda h, e: delivery.handle(h, e, chain.HANDLERS[h].effect),
        fuse=fuse,
    )


@pytest.fixture
def clean(db_conn: Any) -> tuple[list[Any], dict[str, Any]]:
    bars = real_bars(("AAPL", "MSFT"), START, END)
    store_bars(db_conn, bars)
    make_agents(db_conn)
    wire(db_conn).replay(bars)
    return bars, outcome(db_conn)


@pytest.mark.parametrize("fuse", [True, False])
def test_the_bulk_worker_trades_exactly_like_the_per_event_chain(
    db_conn: Any, clean: tuple[list[Any], dict[str, Any]], fuse: bool
) -> None:
    bars, expected = clean
    reset(db_conn)
    store_bars(db_conn, bars)
    make_agents(db_conn)
    w = worker(db_conn, fuse=fuse)
    for burst in bursts(bars):
        stats = w.run(burst)
        assert stats.by_handler["on_bar"] == 2 and stats.by_handler["on_signal"] == 6
    assert outcome(db_conn) == expected
    check_ledger(db_conn)
    pending = db_conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    assert pending.fetchone()[0] == 0


def test_a_burst_killed_mid_way_rolls_back_whole_and_its_rerun_does_it_once(
    db_conn: Any, clean: tuple[list[Any], dict[str, Any]]
) -> None:
    bars, expected = clean
    reset(db_conn)
    store_bars(db_conn, bars)
    make_agents(db_conn)
    kills = iter(range(1_000))

    def fault(point: str) -> None:
        if point == "decided" and next(kills) % 7 == 3:
            raise SimulatedCrashError("killed mid-burst")

    w = worker(db_conn, fault=fault)
    crashed = 0
    for burst in bursts(bars):
        while True:
            try:
                w.run(burst)
                break
            except SimulatedCrashError:
                crashed += 1
                w = worker(db_conn, fault=fault)  # restarted process, empty caches
    assert crashed >= 10
    assert outcome(db_conn) == expected
    check_ledger(db_conn)


def test_a_poison_event_in_a_burst_is_dead_lettered_and_the_rest_is_traded(
    db_conn: Any, clean: tuple[list[Any], dict[str, Any]]
) -> None:
    bars, expected = clean
    reset(db_conn)
    store_bars(db_conn, bars)
    make_agents(db_conn)
    w = worker(db_conn)
    poison = BarEvent(
        symbol="ZZZZ",
        timeframe="1d",
        ts=datetime(2014, 3, 3, tzinfo=UTC),
        open="1",
        high="1",
        low="1",
        close="1",
        volume="1",
        source="test",
    )
    for i, burst in enumerate(bursts(bars)):
        w.run([*burst, poison] if i == 0 else burst)
    letters = PostgresDeliveryStore(db_conn).dead_letters()
    assert [(x["handler"], x["event_id"]) for x in letters] == [("on_bar", poison.event_id)]
    assert outcome(db_conn) == expected
