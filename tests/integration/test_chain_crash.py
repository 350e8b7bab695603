"""Crash safety: the worker dies at random points, mid-handler and between commit and publish,
dozens of times; restarted (fresh caches) and redelivered, it ends exactly where a clean run
ends, with the ledger identities intact and nothing lost or doubled."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from stocktrade.adapters.local.bus import InProcessEventBus, SimulatedCrashError
from stocktrade.errors import TransientError
from stocktrade.schemas.events import Bar as BarEvent
from tests.integration.chain_support import (
    check_ledger,
    make_agents,
    outcome,
    real_bars,
    reset,
    store_bars,
    wire,
)

START, END = "2014-04-01", "2014-05-31"
ENGINE_POINTS = ("bars_stored", "book_stepped", "decided", "before_flush", "fills_applied")
TOPICS = ("market-bars", "signals", "orders", "fills")


class Chaos:
    """Raises a simulated crash at a random fraction of the points it is asked about."""

    def __init__(self, seed: int, probability: float, budget: int) -> None:
        self.rng = random.Random(seed)
        self.probability = probability
        self.budget = budget
        self.fired: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.fired.values())

    def maybe(self, point: str) -> None:
        if self.total < self.budget and self.rng.random() < self.probability:
            self.fired[point] += 1
            raise SimulatedCrashError(f"killed at {point}")


def test_dozens_of_random_crashes_mid_handler_lose_and_double_nothing(db_conn: Any) -> None:
    bars = real_bars(("AAPL", "MSFT"), START, END)
    store_bars(db_conn, bars)
    make_agents(db_conn)
    wire(db_conn).replay(bars)
    clean = outcome(db_conn)
    assert len(clean["fills"]) >= 8

    reset(db_conn)
    store_bars(db_conn, bars)
    make_agents(db_conn)
    chaos = Chaos(seed=20240101, probability=0.05, budget=150)
    bus = InProcessEventBus(record=False)
    harness = wire(db_conn, bus, fault=lambda p: chaos.maybe(f"delivery:{p}"))
    harness.engine.fault = lambda p: chaos.maybe(f"engine:{p}")
    rng = random.Random(7)
    restarts = 0

    def until_quiet(action: Any) -> None:
        nonlocal restarts
        while True:
            try:
                action()
                return
            except (SimulatedCrashError, TransientError):
                restarts += 1
                harness.restart()  # a new process: caches gone, the database and queue remain
                action = bus.drain  # Pub/Sub redelivers what was not acknowledged

    for bar in bars:
        if chaos.total < chaos.budget and rng.random() < 0.25:
            # The bus dies before a delivery, or after one (its acknowledgement lost).
            point = rng.choice(("before_deliver", "after_deliver"))
            bus.crash_on(point, topic=rng.choice(TOPICS))
            chaos.fired[f"bus:{point}"] += 1
        event = BarEvent.from_domain(bar)
        until_quiet(lambda event=event: bus.publish("market-bars", event))
    # Whatever a crash between commit and publish left in the outbox: the cron relay.
    until_quiet(lambda: (harness.delivery.relay_all(max_batches=1_000), bus.drain()))
    chaos.budget = 0
    bus._crashes.clear()  # unfired bus crash rules
    until_quiet(lambda: (harness.delivery.relay_all(max_batches=1_000), bus.drain()))

    engine_or_delivery = sum(v for k, v in chaos.fired.items() if not k.startswith("bus:"))
    assert engine_or_delivery >= 50, chaos.fired
    assert restarts >= 50
    assert {k.split(":")[1] for k in chaos.fired if k.startswith("engine:")} >= {
        "book_stepped",
        "decided",
        "before_flush",
    }
    assert harness.delivery.store.pending_count() == 0
    assert outcome(db_conn) == clean
    check_ledger(db_conn)
