"""The faithful local stack: Pub/Sub emulator push subscriptions to functions-framework servers."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from stocktrade.adapters.gcp.pubsub import PubSubEventBus
from stocktrade.adapters.postgres.delivery import PostgresDeliveryStore
from stocktrade.errors import TransientError
from stocktrade.schemas.events import Bar, Signal, Topic, decode_pubsub_message
from stocktrade.services.delivery import DeliveryService, HandlerContext
from tests.emulators import REPO, FunctionServer, PubSubEmulator

pytestmark = [pytest.mark.integration, pytest.mark.emulator]

FLAKY_SOURCE = REPO / "tests" / "fixtures" / "functions" / "flaky_main.py"
AGENT = uuid.UUID("6f1c2d1e-0000-4000-8000-000000000004")


def a_bar(symbol: str, day: int) -> Bar:
    return Bar(
        symbol=symbol,
        timeframe="1d",
        ts=datetime(2015, 12, day, tzinfo=UTC),
        open="107.01",
        high="107.03",
        low="104.82",
        close="105.26",
        volume="40912316",
        source="replay",
    )


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stored(pg_url: str, bar: Bar) -> bool:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        return (
            conn.execute(
                "SELECT 1 FROM bars WHERE symbol = %s AND ts = %s", (bar.symbol, bar.ts)
            ).fetchone()
            is not None
        )


def trade(conn: Any, symbol: str) -> None:
    """An agent trading ``symbol``: the chain refuses bars of symbols nobody trades or stored."""
    conn.execute(
        "INSERT INTO agents (owner, name, kind, strategy, symbols) "
        "VALUES ('local', %s, 'baseline', 'buy_and_hold', %s)",
        (f"emu-{symbol}", [symbol]),
    )


@pytest.fixture
def bus_for(pubsub_emulator: PubSubEmulator) -> Iterator[Callable[[str], PubSubEventBus]]:
    buses: list[PubSubEventBus] = []

    def make(project: str) -> PubSubEventBus:
        buses.append(PubSubEventBus(project, emulator_host=pubsub_emulator.host))
        return buses[-1]

    yield make
    for bus in buses:
        bus.close()


def test_a_bar_published_to_market_bars_is_stored_by_the_on_bar_function(
    pubsub_emulator: PubSubEmulator,
    pg_url: str,
    db_conn: Any,
    bus_for: Callable[[str], PubSubEventBus],
) -> None:
    project = pubsub_emulator.new_project()
    trade(db_conn, "EMU1")
    env = pubsub_emulator.function_env(project, pg_url)
    with FunctionServer.start("on_bar", env=env) as server:
        pubsub_emulator.create_push_subscription(
            project, "market-bars", server.push_endpoint(project, "market-bars")
        )
        bar = a_bar("EMU1", 30)
        bus_for(project).publish(Topic.MARKET_BARS, bar)
        wait_until(lambda: stored(pg_url, bar), 20, f"on_bar to store {bar.symbol}\n{server.log()}")
    row = db_conn.execute(
        "SELECT handler FROM processed_events WHERE event_id = %s", (bar.event_id,)
    ).fetchone()
    assert row == ("on_bar",)


def test_a_failed_push_is_redelivered_until_the_function_succeeds(
    pubsub_emulator: PubSubEmulator,
    pg_url: str,
    db_conn: Any,
    tmp_path: Path,
    bus_for: Callable[[str], PubSubEventBus],
) -> None:
    project = pubsub_emulator.new_project()
    trade(db_conn, "EMU2")
    attempts = tmp_path / "attempts.txt"
    env = pubsub_emulator.function_env(project, pg_url, FLAKY_ATTEMPTS_FILE=str(attempts))
    with FunctionServer.start("on_bar_fails_first", env=env, source=FLAKY_SOURCE) as server:
        pubsub_emulator.create_push_subscription(
            project, "market-bars", server.push_endpoint(project, "market-bars")
        )
        bar = a_bar("EMU2", 29)
        message_id = bus_for(project).publish(Topic.MARKET_BARS, bar)
        wait_until(lambda: stored(pg_url, bar), 30, f"the redelivery to succeed\n{server.log()}")
        assert " 500 " in server.log() or "simulated failure" in server.log()
    tries = attempts.read_text().split()
    assert tries[:2] == [message_id, message_id]  # first answered 500, then redelivered
    assert db_conn.execute(
        "SELECT count(*) FROM processed_events WHERE event_id = %s", (bar.event_id,)
    ).fetchone() == (1,)


def test_the_relay_publishes_outbox_events_to_pubsub_in_key_order(
    pubsub_emulator: PubSubEmulator, db_conn: Any, bus_for: Callable[[str], PubSubEventBus]
) -> None:
    project = pubsub_emulator.new_project()
    subscription = pubsub_emulator.create_pull_subscription(project, "signals", "collector")
    delivery = DeliveryService(PostgresDeliveryStore(db_conn), bus_for(project))
    db_conn.execute(
        "INSERT INTO agents (id, owner, name, kind, strategy, symbols) "
        "VALUES (%s, 'local', 'emu', 'baseline', 'sma', '{EMU3}')",
        (AGENT,),
    )

    def on_bar(ctx: HandlerContext[Bar]) -> None:
        ctx.outbox.add(
            Topic.SIGNALS,
            Signal(agent_id=AGENT, symbol=ctx.event.symbol, bar_ts=ctx.event.ts, action="hold"),
        )

    bars = [a_bar("EMU3", day) for day in range(1, 6)]
    for bar in bars:
        assert delivery.handle("on_bar", bar, on_bar).relay.published == 1
    messages = pubsub_emulator.pull(subscription, want=5)
    signals = [
        decode_pubsub_message(
            {
                "data": base64.b64encode(m.data).decode(),
                "attributes": dict(m.attributes),
                "messageId": m.message_id,
            },
            Signal,
        ).event
        for m in messages
    ]
    assert [s.bar_ts for s in signals] == [b.ts for b in bars]
    assert {m.ordering_key for m in messages} == {str(AGENT)}
    assert messages[0].attributes["event_type"] == "stocktrade.agent.signal"
    assert PostgresDeliveryStore(db_conn).pending_count() == 0


def test_a_streaming_pull_subscriber_gets_typed_events(
    pubsub_emulator: PubSubEmulator, bus_for: Callable[[str], PubSubEventBus]
) -> None:
    project = pubsub_emulator.new_project()
    bus = bus_for(project)
    got: list[Any] = []
    bus.subscribe("market-bars", got.append, name="watcher")
    bar = a_bar("EMU4", 28)
    bus.publish("market-bars", bar)
    wait_until(lambda: len(got) == 1, 15, "the pull subscriber")
    assert got == [bar]


def test_a_failed_publish_is_transient_and_its_ordering_key_resumes(
    pubsub_emulator: PubSubEmulator, bus_for: Callable[[str], PubSubEventBus]
) -> None:
    project = pubsub_emulator.new_project()
    bus = bus_for(project)
    first, second = a_bar("EMU5", 1), a_bar("EMU5", 2)
    with pytest.raises(TransientError, match="EMU5"):
        bus.publish("market-bars", first)  # the topic does not exist yet
    subscription = pubsub_emulator.create_pull_subscription(project, "market-bars", "after")
    bus.publish("market-bars", second)  # same ordering key: publishable again after resume
    (message,) = pubsub_emulator.pull(subscription, want=1)
    assert message.ordering_key == "EMU5"
    assert Bar.model_validate_json(message.data) == second
