"""Idempotent delivery, the outbox and its relay, dead letters, against a real Postgres."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stocktrade.adapters.local.bus import InProcessEventBus, SimulatedCrashError
from stocktrade.adapters.local.mirror import InMemoryMirror
from stocktrade.adapters.postgres.delivery import PostgresDeliveryStore
from stocktrade.errors import PermanentError, TransientError
from stocktrade.schemas.events import Bar, Signal, Topic, pubsub_cloudevent
from stocktrade.services import chain
from stocktrade.services.delivery import DeliveryService, HandlerContext, Outcome

T0 = datetime(2024, 1, 2, tzinfo=UTC)


def bar(day: int, symbol: str = "AAPL", close: str = "10.5", source: str = "test") -> Bar:
    return Bar(
        symbol=symbol,
        timeframe="1d",
        ts=T0 + timedelta(days=day),
        open="10",
        high="11",
        low="9",
        close=close,
        volume="100",
        source=source,
    )


@pytest.fixture
def agent_id(db_conn: Any) -> uuid.UUID:
    row = db_conn.execute(
        "INSERT INTO agents (owner, name, kind, strategy, symbols) "
        "VALUES ('local', 'sma-test', 'baseline', 'sma', '{AAPL,MSFT}') RETURNING id"
    ).fetchone()
    return row[0]  # type: ignore[no-any-return]


class Chain:
    """A two-step chain on the real delivery service: bar -> signal row."""

    def __init__(self, db_conn: Any, agent_id: uuid.UUID, bus: InProcessEventBus, **kw: Any):
        self.conn = db_conn
        self.agent_id = agent_id
        self.bus = bus
        self.mirror = InMemoryMirror()
        self.store = PostgresDeliveryStore(db_conn)
        self.delivery = DeliveryService(self.store, bus, mirror=self.mirror, **kw)
        self.bar_effects = 0
        self.poison: set[int] = set()
        bus.subscribe(
            "market-bars",
            lambda e: self.delivery.receive("on_bar", e, Bar, self.on_bar),
            name="on_bar",
        )
        bus.subscribe(
            "signals",
            lambda e: self.delivery.receive("on_signal", e, Signal, self.on_signal),
            name="on_signal",
        )

    def on_bar(self, ctx: HandlerContext[Bar]) -> None:
        self.bar_effects += 1
        chain.handle_bar(ctx)
        if ctx.event.ts.day in self.poison:
            raise PermanentError(f"cannot trade {ctx.event.symbol} on day {ctx.event.ts.day}")
        ctx.outbox.add(
            Topic.SIGNALS,
            Signal(
                agent_id=self.agent_id, symbol=ctx.event.symbol, bar_ts=ctx.event.ts, action="buy"
            ),
        )
        ctx.mirror.write("bars", ctx.event.event_id, {"close": str(ctx.event.close)})

    def on_signal(self, ctx: HandlerContext[Signal]) -> None:
        s = ctx.event
        ctx.conn.execute(
            "INSERT INTO signals (id, agent_id, symbol, bar_ts, action) VALUES (%s, %s, %s, %s, %s)",
            (s.event_id, s.agent_id, s.symbol, s.bar_ts, s.action),
        )

    def count(self, table: str) -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_a_duplicate_event_is_a_no_op(db_conn: Any, agent_id: uuid.UUID) -> None:
    c = Chain(db_conn, agent_id, InProcessEventBus())
    first = c.delivery.handle("on_bar", bar(0), c.on_bar)
    second = c.delivery.handle("on_bar", bar(0), c.on_bar)
    assert (first.outcome, second.outcome) == (Outcome.HANDLED, Outcome.DUPLICATE)
    assert c.bar_effects == 1
    assert c.count("bars") == 1 and c.count("signals") == 1 and c.count("outbox") == 1
    assert c.store.is_processed("on_bar", bar(0).event_id)


def test_redelivered_and_shuffled_bars_change_nothing_the_second_time(
    db_conn: Any, agent_id: uuid.UUID
) -> None:
    c = Chain(db_conn, agent_id, InProcessEventBus(redeliver=True, shuffle_seed=3))
    with c.bus.paused():
        for day in range(6):
            c.bus.publish("market-bars", bar(day))
            c.bus.publish("market-bars", bar(day, "MSFT"))
    assert len(c.bus.deliveries("on_bar")) == 24  # every bar twice
    assert len(c.bus.deliveries("on_signal")) == 24
    assert c.bar_effects == 12
    assert c.count("bars") == 12 and c.count("signals") == 12
    assert c.store.pending_count() == 0


def test_a_crash_after_commit_before_publish_is_published_by_the_next_relay_once(
    db_conn: Any, agent_id: uuid.UUID
) -> None:
    crashes = iter([True])

    def crash_once(point: str) -> None:
        if point == "after_commit" and next(crashes, False):
            raise SimulatedCrashError("instance died after commit")

    c = Chain(db_conn, agent_id, InProcessEventBus(), fault=crash_once)
    with pytest.raises(SimulatedCrashError):
        c.bus.publish("market-bars", bar(0))
    assert c.count("bars") == 1  # the effect committed
    assert c.store.pending_count() == 1  # its signal waits in the outbox
    assert c.bus.events("signals") == []  # nothing published
    assert c.mirror.docs == {}  # the mirror is written after the relay point only

    # Pub/Sub redelivers the unacknowledged bar: a duplicate, whose relay publishes the signal.
    assert c.bus.drain() == 2  # the bar again, then its signal
    assert [d.attempt for d in c.bus.deliveries("on_bar", ok=None)] == [1, 2]
    assert c.bar_effects == 1
    assert c.store.pending_count() == 0
    assert c.count("signals") == 1

    # A later relay (cron) finds nothing, and republishing the same signal changes nothing.
    assert c.delivery.relay_all().published == 0
    c.bus.publish("signals", c.bus.events("signals")[0])
    assert c.count("signals") == 1


def test_a_bus_outage_leaves_the_row_for_a_later_relay(db_conn: Any, agent_id: uuid.UUID) -> None:
    bus = InProcessEventBus()
    c = Chain(db_conn, agent_id, bus)
    bus.crash_on("publish", topic="signals")
    result = None
    with pytest.raises(TransientError, match="not published yet"):
        result = c.delivery.handle("on_bar", bar(0), c.on_bar)
    assert result is None
    row = db_conn.execute(
        "SELECT published_at, claimed_until, attempts, last_error FROM outbox"
    ).fetchone()
    assert row[0] is None and row[1] is None and row[2] == 1 and "SimulatedCrashError" in row[3]
    relayed = c.delivery.relay_all()
    assert (relayed.published, relayed.failed) == (1, 0)
    assert c.count("signals") == 1


def test_a_crash_inside_the_transaction_rolls_everything_back(
    db_conn: Any, agent_id: uuid.UUID
) -> None:
    def crash(point: str) -> None:
        if point == "after_effect":
            raise SimulatedCrashError("died before commit")

    c = Chain(db_conn, agent_id, InProcessEventBus(), fault=crash)
    with pytest.raises(SimulatedCrashError):
        c.delivery.handle("on_bar", bar(0), c.on_bar)
    assert c.count("bars") == 0 and c.count("outbox") == 0 and c.count("processed_events") == 0


def test_a_permanent_error_is_dead_lettered_and_the_next_event_still_processes(
    db_conn: Any, agent_id: uuid.UUID
) -> None:
    c = Chain(db_conn, agent_id, InProcessEventBus())
    c.poison = {3}
    with c.bus.paused():
        c.bus.publish("market-bars", bar(1))  # day 3: poisoned
        c.bus.publish("market-bars", bar(2))
    assert [d.ok for d in c.bus.deliveries("on_bar", ok=None)] == [True, True]  # both acked
    letters = c.store.dead_letters("on_bar")
    assert len(letters) == 1
    assert letters[0]["event_id"] == bar(1).event_id
    assert letters[0]["reason"] == "PermanentError: cannot trade AAPL on day 3"
    assert '"close":"10.5"' in letters[0]["payload"]
    # The poisoned bar's effects were rolled back; the next bar went through the whole chain.
    assert c.count("bars") == 1 and c.count("signals") == 1
    assert not c.store.is_processed("on_bar", bar(1).event_id)
    assert list(c.mirror.docs["bars"]) == [bar(2).event_id]


def test_a_payload_that_never_decodes_is_dead_lettered_under_its_message_id(
    db_conn: Any, agent_id: uuid.UUID
) -> None:
    c = Chain(db_conn, agent_id, InProcessEventBus())
    bad = pubsub_cloudevent(b'{"schema_version": 9}', message_id="4242", topic="market-bars")
    for _ in range(2):  # a redelivery of the same bad message adds no second record
        result = c.delivery.receive("on_bar", bad, Bar, c.on_bar)
        assert result.outcome is Outcome.DEAD_LETTERED
    letters = c.store.dead_letters()
    assert [(x["event_id"], x["topic"]) for x in letters] == [("msg:4242", "market-bars")]
    assert "UnsupportedSchemaVersionError" in letters[0]["reason"]


def test_data_the_database_rejects_is_a_dead_letter_not_a_retry_loop(
    db_conn: Any, agent_id: uuid.UUID
) -> None:
    c = Chain(db_conn, agent_id, InProcessEventBus())
    huge = Bar(
        symbol="AAPL",
        timeframe="1d",
        ts=T0,
        open="1e11",
        high="1e11",
        low="1e11",
        close="1e11",
        volume="1",
        source="test",
    )  # NUMERIC(18,8) overflow
    result = c.delivery.handle("on_bar", huge, c.on_bar)
    assert result.outcome is Outcome.DEAD_LETTERED
    assert "NumericValueOutOfRange" in (result.reason or "")


def test_a_transient_error_propagates_and_changes_nothing_then_the_retry_succeeds(
    db_conn: Any, agent_id: uuid.UUID
) -> None:
    c = Chain(db_conn, agent_id, InProcessEventBus())
    failures = iter([TransientError("broker timeout")])

    def effect(ctx: HandlerContext[Bar]) -> None:
        c.on_bar(ctx)
        err = next(failures, None)
        if err:
            raise err

    with pytest.raises(TransientError, match="broker timeout"):
        c.delivery.handle("on_bar", bar(0), effect)
    assert c.count("bars") == 0 and c.store.dead_letters() == []
    assert c.delivery.handle("on_bar", bar(0), effect).outcome is Outcome.HANDLED
    assert c.count("signals") == 1


def test_two_relays_never_lease_the_same_rows(db_conn: Any, agent_id: uuid.UUID) -> None:
    c = Chain(db_conn, agent_id, InProcessEventBus(), relay_after_handle=False)
    for day in range(5):
        c.delivery.handle("on_bar", bar(day), c.on_bar)
    first = c.store.claim_pending(3, 60)
    second = c.store.claim_pending(3, 60)
    assert len(first) == 3 and len(second) == 2
    assert not {r.id for r in first} & {r.id for r in second}
    assert c.store.claim_pending(3, 60) == []  # all leased
    c.store.release([r.id for r in first], None)
    assert [r.id for r in c.store.claim_pending(10, 60)] == [r.id for r in first]


def test_handling_inside_a_handler_transaction_is_refused(
    db_conn: Any, agent_id: uuid.UUID
) -> None:
    c = Chain(db_conn, agent_id, InProcessEventBus())

    def nested(ctx: HandlerContext[Bar]) -> None:
        c.delivery.handle("on_bar", bar(5), c.on_bar)

    with pytest.raises(RuntimeError, match=r"ctx\.outbox"):
        c.delivery.handle("other", bar(0), nested)
    assert c.count("processed_events") == 0


def test_the_chain_module_wires_every_handler_through_delivery(
    db_conn: Any, agent_id: uuid.UUID
) -> None:
    bus = InProcessEventBus()
    delivery = DeliveryService(PostgresDeliveryStore(db_conn), bus)
    assert chain.subscribe(bus, delivery) == [
        "on_bar",
        "on_signal",
        "on_order",
        "on_fill",
        "on_model_promoted",
    ]
    bus.publish("market-bars", bar(0))
    bus.publish("market-bars", bar(0, close="10.6"))  # same source and key: the same event
    bus.publish("signals", Signal(agent_id=agent_id, symbol="AAPL", bar_ts=T0, action="hold"))
    assert [str(r[0]) for r in db_conn.execute("SELECT close FROM bars")] == ["10.50000000"]
    bus.publish("market-bars", bar(0, close="10.75", source="polygon"))  # another feed's bar
    rows = db_conn.execute("SELECT close, source FROM bars").fetchall()
    assert [(str(c), s) for c, s in rows] == [("10.75000000", "polygon")]
    handlers = {r[0] for r in db_conn.execute("SELECT handler FROM processed_events")}
    assert handlers == {"on_bar", "on_signal"}
