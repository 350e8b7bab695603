"""At-least-once, out-of-order delivery changes nothing: every event twice, shuffled within
its ordering key, or a whole topic arriving late, gives the clean run's orders, fills,
positions and cash."""

from __future__ import annotations

from typing import Any

import pytest

from stocktrade.adapters.local.bus import InProcessEventBus
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

START, END = "2014-03-01", "2014-05-31"


@pytest.fixture
def bars(db_conn: Any) -> list[Any]:
    bars = real_bars(("AAPL", "MSFT"), START, END)
    return bars


def clean_run(conn: Any, bars: list[Any]) -> dict[str, Any]:
    reset(conn)
    store_bars(conn, bars)
    make_agents(conn)
    wire(conn).replay(bars)
    check_ledger(conn)
    return outcome(conn)


def test_every_event_delivered_twice_and_shuffled_within_its_key_gives_the_clean_result(
    db_conn: Any, bars: list[Any]
) -> None:
    clean = clean_run(db_conn, bars)
    assert len(clean["fills"]) >= 10 and len(clean["orders"]) == len(clean["fills"])

    reset(db_conn)
    store_bars(db_conn, bars)
    make_agents(db_conn)
    bus = InProcessEventBus(redeliver=True, shuffle_seed=11)
    wire(db_conn, bus)
    by_ts: dict[Any, list[Any]] = {}
    for b in bars:
        by_ts.setdefault(b.ts, []).append(b)
    for group in by_ts.values():
        # One timestamp's bars queue together; everything they cause is delivered twice and
        # shuffled within each ordering key (the symbol for bars, the agent for the rest).
        with bus.paused():
            for b in group:
                bus.publish("market-bars", BarEvent.from_domain(b))
    assert {d.attempt for d in bus.deliveries("on_signal")} == {1, 2}
    assert len(bus.deliveries("on_fill")) == 2 * len(clean["fills"])
    assert outcome(db_conn) == clean  # no duplicate order, no lost or doubled fill
    check_ledger(db_conn)
    duplicates = db_conn.execute(
        "SELECT count(*) FROM processed_events GROUP BY handler, event_id HAVING count(*) > 1"
    ).fetchall()
    assert duplicates == []


def test_bars_handled_before_their_signals_arrive_decide_them_first_with_the_same_result(
    db_conn: Any, bars: list[Any]
) -> None:
    clean = clean_run(db_conn, bars)

    reset(db_conn)
    store_bars(db_conn, bars)
    make_agents(db_conn)
    # No relay after each event: every bar is handled before any signal, order or fill is
    # delivered (as if the signals topic lagged the market-bars topic by the whole period).
    bus = InProcessEventBus(shuffle_seed=5)
    harness = wire(db_conn, bus, relay_after_handle=False)
    for b in bars:
        bus.publish("market-bars", BarEvent.from_domain(b))
    assert bus.deliveries("on_signal") == []
    books = db_conn.execute("SELECT count(*) FROM chain_books WHERE signal IS NOT NULL").fetchone()
    assert books[0] == 6  # only each book's last bar awaits its signal
    with bus.paused():
        harness.delivery.relay_all(max_batches=1_000)  # the late events, shuffled per agent
    assert len(bus.deliveries("on_signal")) == 3 * len(bars)
    assert outcome(db_conn) == clean
    check_ledger(db_conn)


def test_replaying_the_same_bars_again_is_a_no_op(db_conn: Any, bars: list[Any]) -> None:
    clean = clean_run(db_conn, bars)
    counts = db_conn.execute("SELECT count(*) FROM processed_events").fetchone()[0]
    harness = wire(db_conn)
    harness.replay(bars)
    assert outcome(db_conn) == clean
    assert db_conn.execute("SELECT count(*) FROM processed_events").fetchone()[0] == counts
