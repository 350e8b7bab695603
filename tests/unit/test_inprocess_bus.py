"""The in-process bus: FIFO, re-entrancy, redelivery, shuffling and crash hooks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stocktrade.adapters.local.bus import InProcessEventBus, SimulatedCrashError
from stocktrade.errors import ValidationError
from stocktrade.schemas.events import Bar, Event, Signal

AGENT = uuid.UUID("6f1c2d1e-0000-4000-8000-000000000002")
T0 = datetime(2024, 1, 2, tzinfo=UTC)


def bar(day: int, symbol: str = "AAPL") -> Bar:
    return Bar(
        symbol=symbol,
        timeframe="1d",
        ts=T0 + timedelta(days=day),
        open="10",
        high="11",
        low="9",
        close="10.5",
        volume="100",
        source="test",
    )


def signal_for(b: Bar) -> Signal:
    return Signal(agent_id=AGENT, symbol=b.symbol, bar_ts=b.ts, action="buy")


def test_publishing_delivers_to_every_subscription_in_order() -> None:
    bus = InProcessEventBus()
    seen: list[tuple[str, Any]] = []
    bus.subscribe("market-bars", lambda e: seen.append(("a", e.ts)), name="a")
    bus.subscribe("market-bars", lambda e: seen.append(("b", e.ts)), name="b")
    bus.publish("market-bars", bar(0))
    bus.publish("market-bars", bar(1))
    assert seen == [("a", bar(0).ts), ("b", bar(0).ts), ("a", bar(1).ts), ("b", bar(1).ts)]
    assert bus.pending == 0


def test_events_a_handler_publishes_are_delivered_after_it_returns() -> None:
    bus = InProcessEventBus()
    log: list[str] = []

    def on_bar(event: Event) -> None:
        assert isinstance(event, Bar)
        log.append(f"bar {event.ts.day} start")
        bus.publish("signals", signal_for(event))
        log.append(f"bar {event.ts.day} end")

    bus.subscribe("market-bars", on_bar)
    bus.subscribe("signals", lambda e: log.append(f"signal {e.bar_ts.day}"), name="on_signal")
    with bus.paused():
        bus.publish("market-bars", bar(0))
        bus.publish("market-bars", bar(1))
        assert log == []  # paused: queued only
    assert log == ["bar 2 start", "bar 2 end", "bar 3 start", "bar 3 end", "signal 2", "signal 3"]


def test_redelivery_hook_delivers_every_event_twice_the_copy_later() -> None:
    bus = InProcessEventBus(redeliver=True)
    seen: list[tuple[int, int]] = []
    bus.subscribe("market-bars", lambda e: seen.append((e.ts.day, 0)), name="s")
    with bus.paused():
        bus.publish("market-bars", bar(0))
        bus.publish("market-bars", bar(1))
    assert [d for d, _ in seen] == [2, 3, 2, 3]
    attempts = [d.attempt for d in bus.deliveries("s")]
    assert attempts == [1, 1, 2, 2]


def test_shuffle_permutes_within_an_ordering_key_only_and_is_seeded() -> None:
    def run(seed: int) -> list[tuple[str, int]]:
        bus = InProcessEventBus(shuffle_seed=seed)
        seen: list[tuple[str, int]] = []
        bus.subscribe("market-bars", lambda e: seen.append((e.symbol, e.ts.day)), name="s")
        with bus.paused():
            for day in range(8):
                bus.publish("market-bars", bar(day, "AAPL"))
                bus.publish("market-bars", bar(day, "MSFT"))
        return seen

    first = run(7)
    assert first == run(7)  # deterministic
    assert [s for s, _ in first] == ["AAPL", "MSFT"] * 8  # slots per key stay where they were
    aapl_days = [d for s, d in first if s == "AAPL"]
    assert sorted(aapl_days) == list(range(2, 10)) and aapl_days != sorted(aapl_days)


def test_a_failing_handler_keeps_its_delivery_for_a_retry_and_the_error_is_loud() -> None:
    bus = InProcessEventBus()
    calls: list[int] = []

    def flaky(event: Event) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database restarting")

    bus.subscribe("market-bars", flaky, name="flaky")
    with pytest.raises(RuntimeError, match="restarting"):
        bus.publish("market-bars", bar(0))
    assert bus.pending == 1
    assert bus.drain() == 1
    assert [(d.attempt, d.ok) for d in bus.deliveries("flaky", ok=None)] == [(1, False), (2, True)]


def test_crash_after_delivery_means_the_ack_was_lost_so_it_is_delivered_again() -> None:
    bus = InProcessEventBus()
    seen: list[int] = []
    bus.subscribe("market-bars", lambda e: seen.append(e.ts.day), name="s")
    bus.crash_on("after_deliver", subscriber="s")
    with pytest.raises(SimulatedCrashError):
        bus.publish("market-bars", bar(0))
    bus.drain()
    assert seen == [2, 2]


def test_crash_before_delivery_skips_the_handler_until_the_retry() -> None:
    bus = InProcessEventBus()
    seen: list[int] = []
    bus.subscribe("market-bars", lambda e: seen.append(e.ts.day), name="s")
    bus.crash_on("before_deliver", topic="market-bars", times=2)
    for _ in range(2):
        with pytest.raises(SimulatedCrashError):
            bus.drain() if bus.pending else bus.publish("market-bars", bar(0))
        assert seen == []
    bus.drain()
    assert seen == [2]


def test_a_publish_crash_queues_nothing_and_publish_many_pauses_that_key() -> None:
    bus = InProcessEventBus()
    seen: list[tuple[str, int]] = []
    bus.subscribe("market-bars", lambda e: seen.append((e.symbol, e.ts.day)), name="s")
    bus.crash_on("publish", topic="market-bars")
    results = bus.publish_many(
        [
            ("market-bars", bar(0, "AAPL"), None),
            ("market-bars", bar(0, "MSFT"), None),
            ("market-bars", bar(1, "AAPL"), None),
        ]
    )
    assert isinstance(results[0], SimulatedCrashError)
    assert results[1] == "m1"
    assert isinstance(results[2], SimulatedCrashError)  # AAPL paused: order kept
    assert seen == [("MSFT", 2)]


def test_the_bus_rejects_unknown_topics_and_events_on_the_wrong_topic() -> None:
    bus = InProcessEventBus()
    with pytest.raises(ValidationError, match="unknown topic"):
        bus.publish("trades", bar(0))
    with pytest.raises(ValidationError, match="belongs on topic 'market-bars'"):
        bus.publish("signals", bar(0))
    bus.subscribe("signals", lambda e: None, name="x")
    with pytest.raises(ValidationError, match="already has"):
        bus.subscribe("signals", lambda e: None, name="x")


def test_every_publication_is_recorded_with_its_ordering_key() -> None:
    bus = InProcessEventBus()
    bus.publish("market-bars", bar(0))
    bus.publish("signals", signal_for(bar(0)), ordering_key="")
    assert [(p.topic, p.ordering_key) for p in bus.published] == [
        ("market-bars", "AAPL"),
        ("signals", None),
    ]
    assert bus.events("signals") == [signal_for(bar(0))]
