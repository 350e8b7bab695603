"""Events that can never succeed become dead letters with their reason, and the chain keeps
trading the good ones."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from stocktrade.schemas.events import Bar, Fill, Order, Signal, pubsub_cloudevent
from stocktrade.services import chain
from stocktrade.services.delivery import Outcome
from tests.integration.chain_support import check_ledger, make_agents, real_bars, store_bars, wire

TS = datetime(2014, 3, 3, tzinfo=UTC)


def deliver(harness: Any, name: str, message: Any) -> Any:
    handler = chain.HANDLERS[name]
    return harness.delivery.receive(name, message, handler.model, handler.effect)


def test_malformed_events_are_dead_lettered_with_reasons_and_the_chain_keeps_trading(
    db_conn: Any,
) -> None:
    bars = real_bars(("AAPL", "MSFT"), "2014-03-01", "2014-04-15")
    store_bars(db_conn, bars)
    agents = make_agents(db_conn)
    sma = agents["sma"]
    harness = wire(db_conn)
    bad = {
        "bad json": (
            "on_bar",
            pubsub_cloudevent(b"{not json", topic="market-bars", message_id="m-json"),
        ),
        "schema version": (
            "on_bar",
            pubsub_cloudevent(
                b'{"schema_version": 7, "symbol": "AAPL"}',
                topic="market-bars",
                message_id="m-version",
            ),
        ),
        "wrong schema": (
            "on_signal",
            pubsub_cloudevent(
                b'{"schema_version": 1, "agent_id": "nope"}', topic="signals", message_id="m-schema"
            ),
        ),
        "unknown symbol bar": (
            "on_bar",
            Bar(
                symbol="ZZZZ",
                timeframe="1d",
                ts=TS,
                open="1",
                high="1",
                low="1",
                close="1",
                volume="1",
                source="test",
            ),
        ),
        "unknown agent": (
            "on_signal",
            Signal(agent_id=uuid.uuid4(), symbol="AAPL", bar_ts=TS, action="buy"),
        ),
        "symbol not traded": (
            "on_signal",
            Signal(agent_id=sma.id, symbol="TSLA", bar_ts=TS, action="buy"),
        ),
        "order no decision placed": (
            "on_order",
            Order(
                client_order_id="rogue-1",
                agent_id=sma.id,
                symbol="AAPL",
                side="buy",
                qty="10",
                bar_ts=TS,
            ),
        ),
        "fill never executed": (
            "on_fill",
            Fill(
                fill_id="rogue-1-f1",
                client_order_id="rogue-1",
                agent_id=sma.id,
                symbol="AAPL",
                side="buy",
                qty="10",
                price="75",
                ts=TS,
            ),
        ),
    }
    for what, (name, message) in bad.items():
        result = deliver(harness, name, message)
        assert result.outcome is Outcome.DEAD_LETTERED, what
        assert deliver(harness, name, message).outcome is Outcome.DEAD_LETTERED  # redelivered
    letters = harness.delivery.store.dead_letters()
    assert len(letters) == len(bad)  # one record each, however often delivered
    reasons = " | ".join(x["reason"] for x in letters)
    for expected in (
        "not JSON",
        "UnsupportedSchemaVersionError",
        "SchemaMismatchError",
        "unknown symbol(s) ['ZZZZ']",
        "unknown agent",
        "unknown symbol 'TSLA'",
        "not placed by a recorded decision",
        "not executed by the paper broker",
    ):
        assert expected in reasons
    assert db_conn.execute("SELECT count(*) FROM bars WHERE symbol = 'ZZZZ'").fetchone()[0] == 0

    harness.replay(bars)  # the chain goes on with the good events
    assert len(harness.delivery.store.dead_letters()) == len(bad)
    decided = db_conn.execute("SELECT count(*) FROM decisions").fetchone()[0]
    assert decided == 3 * len(bars)
    assert check_ledger(db_conn)["fills"] >= 3
