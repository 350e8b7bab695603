"""Event payloads: round trips, deterministic ids, versioning, and decoding real envelopes."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cloudevents.conversion import to_structured
from cloudevents.http import from_http

from stocktrade.domain.bars import Timeframe
from stocktrade.errors import PermanentError
from stocktrade.schemas.events import (
    EVENT_MODELS,
    Bar,
    Event,
    Fill,
    MalformedEventError,
    ModelPromoted,
    NewsItem,
    Order,
    SchedulerTick,
    SchemaMismatchError,
    Signal,
    Topic,
    UnsupportedSchemaVersionError,
    build_cloudevent,
    decode_cloudevent,
    decode_push_envelope,
    derive_id,
    event_from_payload,
    model_for_topic,
    parse_cloudevent,
    pubsub_cloudevent,
    pubsub_push_envelope,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pubsub"
AGENT = uuid.UUID("6f1c2d1e-0000-4000-8000-000000000001")
TS = datetime(2015, 12, 31, tzinfo=UTC)


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def a_bar(**changes: Any) -> Bar:
    fields: dict[str, Any] = dict(
        symbol="AAPL",
        timeframe="1d",
        ts=TS,
        open="107.01",
        high="107.03",
        low="104.82",
        close="105.26",
        volume="40912316",
        source="replay",
    )
    return Bar(**{**fields, **changes})


def one_of_each() -> list[Event]:
    return [
        a_bar(),
        Signal(
            agent_id=AGENT,
            symbol="AAPL",
            bar_ts=TS,
            action="buy",
            confidence=0.7,
            probs=(0.1, 0.7, 0.2),
            inference_backend="onnx-cpu",
            inference_latency_us=41.5,
        ),
        Order(
            client_order_id="o-1", agent_id=AGENT, symbol="AAPL", side="buy", qty="10", bar_ts=TS
        ),
        Fill(
            fill_id="f-1",
            client_order_id="o-1",
            agent_id=AGENT,
            symbol="AAPL",
            side="buy",
            qty="10",
            price="105.2612345678",
            fee="0.05",
            ts=TS + timedelta(days=1),
        ),
        NewsItem(
            news_id="n-1", symbols=("AAPL",), published_at=TS, headline="Apple up", sentiment=0.4
        ),
        ModelPromoted(
            model_version_id=uuid.uuid4(),
            agent_id=AGENT,
            agent_name="ppo-aapl",
            version=3,
            uri_onnx="gs://b/models/ppo.onnx",
            sha256="a" * 64,
            promoted_at=TS,
        ),
        SchedulerTick(job="relay", scheduled_at=TS),
    ]


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: type(e).__name__)
def test_every_event_survives_a_json_round_trip_unchanged(event: Event) -> None:
    again = type(event).model_validate_json(event.to_json_bytes())
    assert again == event
    assert again.event_id == event.event_id


def test_money_and_quantities_travel_as_exact_decimal_strings() -> None:
    fill = one_of_each()[3]
    wire = json.loads(fill.to_json_bytes())
    assert wire["price"] == "105.2612345678"
    assert wire["qty"] == "10"
    assert isinstance(fill, Fill)
    assert fill.price == Decimal("105.2612345678")


def test_timestamps_are_converted_to_utc_and_naive_ones_are_rejected() -> None:
    bar = a_bar(ts=datetime(2015, 12, 30, 19, tzinfo=timezone(timedelta(hours=-5))))
    assert bar.ts == TS and bar.ts.tzinfo == UTC
    assert json.loads(bar.to_json_bytes())["ts"] == "2015-12-31T00:00:00Z"
    with pytest.raises(ValueError, match="timezone"):
        a_bar(ts=datetime(2015, 12, 31))


def test_a_republished_bar_is_the_same_event() -> None:
    first = a_bar()
    again = a_bar(ts=datetime(2015, 12, 31, 1, tzinfo=timezone(timedelta(hours=1))))
    assert again.event_id == first.event_id
    assert a_bar(source="polygon").event_id != first.event_id
    assert a_bar(symbol="MSFT").event_id != first.event_id
    assert a_bar(timeframe="1h").event_id != first.event_id


def test_order_and_fill_ids_are_their_natural_keys() -> None:
    _, signal, order, fill, *_ = one_of_each()
    assert order.event_id == "o-1"
    assert fill.event_id == "f-1"
    assert signal.event_id == derive_id("signal", AGENT, "AAPL", TS)
    uuid.UUID(signal.event_id)  # usable as signals.id


def test_an_event_id_that_contradicts_the_natural_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="does not match"):
        Order(
            event_id="other",
            client_order_id="o-1",
            agent_id=AGENT,
            symbol="AAPL",
            side="buy",
            qty="1",
            bar_ts=TS,
        )


def test_ordering_keys_follow_the_design_table() -> None:
    bar, signal, order, fill, news, promoted, tick = one_of_each()
    assert bar.ordering_key == "AAPL"
    assert signal.ordering_key == order.ordering_key == fill.ordering_key == str(AGENT)
    assert promoted.ordering_key == "ppo-aapl"
    assert news.ordering_key is None and tick.ordering_key is None
    assert {t.value for t in Topic} == {
        "market-bars",
        "signals",
        "orders",
        "fills",
        "news",
        "model-promoted",
        "scheduler-ticks",
    }
    assert all(model.TOPIC is topic for topic, model in EVENT_MODELS.items())


def test_unknown_fields_and_inconsistent_bars_are_rejected() -> None:
    payload = json.loads(a_bar().to_json_bytes())
    with pytest.raises(SchemaMismatchError, match="vwap"):
        event_from_payload(Bar, {**payload, "vwap": "1"})
    with pytest.raises(SchemaMismatchError, match="OHLC inconsistent"):
        event_from_payload(Bar, {**payload, "high": "100"})
    with pytest.raises(ValueError, match="qty or target_fraction"):
        Order(client_order_id="o-2", agent_id=AGENT, symbol="AAPL", side="sell", bar_ts=TS)


def test_an_unknown_schema_version_is_rejected_with_a_clear_error() -> None:
    payload = json.loads(a_bar().to_json_bytes())
    with pytest.raises(
        UnsupportedSchemaVersionError,
        match=r"schema_version 2 is not supported; "
        r"expected one of \[1\]",
    ):
        event_from_payload(Bar, {**payload, "schema_version": 2})
    with pytest.raises(UnsupportedSchemaVersionError, match="no schema_version"):
        event_from_payload(Bar, {k: v for k, v in payload.items() if k != "schema_version"})
    with pytest.raises(UnsupportedSchemaVersionError):
        Bar.model_validate({**payload, "schema_version": "1"})  # a string is not a version


def test_decode_errors_are_permanent_so_they_become_dead_letters() -> None:
    assert issubclass(UnsupportedSchemaVersionError, PermanentError)
    assert issubclass(SchemaMismatchError, PermanentError)
    assert issubclass(MalformedEventError, PermanentError)


def test_the_recorded_emulator_push_decodes_to_the_published_bar() -> None:
    received = decode_push_envelope(fixture("emulator_push_bar.json"), Bar)
    assert received.event == a_bar()
    assert received.message_id == "1"
    assert received.subscription == "projects/local-project/subscriptions/on-bar-push"
    assert received.publish_time == datetime(2026, 11, 21, 5, 55, 52, 57000, tzinfo=UTC)
    assert received.attributes["event_type"] == "stocktrade.market.bar"


def test_a_production_push_keeps_its_ordering_key_and_attempt() -> None:
    received = decode_push_envelope(json.dumps(fixture("gcp_push_bar_ordered.json")), Bar)
    assert received.event == a_bar()
    assert received.ordering_key == "AAPL"
    assert received.delivery_attempt == 1


def test_a_push_whose_data_is_not_json_is_malformed_and_names_the_message() -> None:
    with pytest.raises(MalformedEventError, match="not JSON") as info:
        decode_push_envelope(fixture("emulator_push_not_json.json"), Bar)
    assert info.value.message_id == "2"
    assert info.value.payload == "not json {"


def test_a_push_from_a_future_schema_version_is_rejected() -> None:
    with pytest.raises(UnsupportedSchemaVersionError, match="schema_version 2") as info:
        decode_push_envelope(fixture("gcp_push_bar_v2.json"), Bar)
    assert info.value.message_id == "13675891563842047"
    assert '"vwap"' in (info.value.payload or "")


def test_a_farm_mark_ii_bar_message_is_read_with_exact_decimals() -> None:
    received = decode_push_envelope(fixture("farm_push_bar.json"), Bar)
    bar = received.event
    assert (bar.symbol, bar.timeframe, bar.source) == ("AAPL", Timeframe.M1, "alpaca_stock")
    assert bar.open == Decimal("150.25") and bar.low == Decimal("150.1")
    assert bar.ts == datetime(2025, 1, 15, 14, 30, tzinfo=UTC)


def test_a_message_declaring_another_event_type_is_a_schema_mismatch() -> None:
    envelope = fixture("emulator_push_bar.json")
    with pytest.raises(
        SchemaMismatchError, match=r"expected event_type 'stocktrade\.agent\.signal'"
    ):
        decode_push_envelope(envelope, Signal)


def test_broken_envelopes_are_malformed() -> None:
    envelope = fixture("emulator_push_bar.json")
    with pytest.raises(MalformedEventError, match="base64"):
        decode_push_envelope({"message": {**envelope["message"], "data": "%%%"}}, Bar)
    with pytest.raises(MalformedEventError, match="no data"):
        decode_push_envelope({"message": {"messageId": "3"}}, Bar)
    with pytest.raises(MalformedEventError, match="push body is not JSON"):
        decode_push_envelope(b"{", Bar)
    with pytest.raises(MalformedEventError, match="JSON object"):
        decode_push_envelope(
            {"message": {**envelope["message"], "data": base64.b64encode(b"[1]").decode()}}, Bar
        )


def test_the_eventarc_cloudevent_decodes_after_an_http_round_trip() -> None:
    raw = fixture("eventarc_cloudevent_bar.json")
    ce = from_http({"content-type": "application/cloudevents+json"}, json.dumps(raw))
    received = decode_cloudevent(ce, Bar)
    assert received.event == a_bar()
    assert received.topic == "market-bars"
    assert received.ordering_key == "AAPL"
    assert received.message_id == "13675891563842046"


def test_built_cloudevents_decode_back_to_the_same_event() -> None:
    for event in one_of_each():
        model = type(event)
        direct = build_cloudevent(event)
        assert direct["type"] == model.EVENT_TYPE and direct["id"] == event.event_id
        headers, body = to_structured(direct)
        assert parse_cloudevent(from_http(headers, body), model) == event
        via_pubsub = pubsub_cloudevent(event, message_id="77")
        headers, body = to_structured(via_pubsub)
        received = decode_cloudevent(from_http(headers, body), model)
        assert received.event == event and received.message_id == "77"


def test_a_cloudevent_of_another_type_is_malformed() -> None:
    with pytest.raises(MalformedEventError, match=r"found 'stocktrade\.agent\.order'"):
        parse_cloudevent(build_cloudevent(one_of_each()[2]), Bar)


def test_push_envelopes_can_carry_raw_bytes_for_negative_tests() -> None:
    envelope = pubsub_push_envelope(b"\xff\xfe", message_id="5", topic="market-bars")
    with pytest.raises(MalformedEventError) as info:
        decode_push_envelope(envelope, Bar)
    assert info.value.message_id == "5"


def test_model_for_topic_rejects_unknown_topics() -> None:
    assert model_for_topic("fills") is Fill
    with pytest.raises(MalformedEventError, match="unknown topic 'trades'"):
        model_for_topic("trades")


def test_events_are_frozen() -> None:
    bar = a_bar()
    with pytest.raises(ValueError, match="frozen"):
        bar.close = Decimal(1)  # type: ignore[misc]
