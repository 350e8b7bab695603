"""Event payloads of the live chain, their topics, and the CloudEvent / Pub/Sub envelopes.

Every event is a frozen pydantic model with ``schema_version`` and ``event_id``. The id is
deterministic where the event has a natural key, so publishing the same fact twice gives the
same event and idempotent handlers absorb the copy:

============== ================== ============ ==========================================
model          topic              ordering key ``event_id``
============== ================== ============ ==========================================
Bar            ``market-bars``    symbol       uuid5 of source, symbol, timeframe, ts
Signal         ``signals``        agent id     uuid5 of agent, symbol, bar ts
Order          ``orders``         agent id     the ``client_order_id``
Fill           ``fills``          agent id     the ``fill_id``
NewsItem       ``news``           —            uuid5 of the news id
ModelPromoted  ``model-promoted`` agent name   uuid5 of the model version id
SchedulerTick  ``scheduler-ticks`` —           uuid5 of job and scheduled time (else random)
============== ================== ============ ==========================================

On the wire, money and quantities are decimal strings (``"150.25"``, never floats) and times
are ISO 8601 in UTC. Pub/Sub messages carry the JSON payload as ``data`` and the attributes
``event_type``, ``schema_version`` and ``event_id``.

Decoding never guesses: bad base64 or JSON, an unsupported ``schema_version``, or a payload
that does not fit the model raise a :class:`EventDecodeError` (a
:class:`~stocktrade.errors.PermanentError`), which the delivery service turns into a dead
letter. The one tolerated legacy format is the Farm Mark II bar message (``{"type": "bar",
"symbol", "timestamp", "open", ..., "source"}`` with float prices), read as a :class:`Bar`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from stocktrade.domain.bars import Bar as DomainBar
from stocktrade.domain.bars import Timeframe, bar_problems
from stocktrade.domain.orders import OrderType, Side
from stocktrade.errors import PermanentError

__all__ = [
    "EVENT_MODELS",
    "PUBSUB_MESSAGE_PUBLISHED",
    "SCHEMA_VERSION",
    "Bar",
    "Event",
    "EventDecodeError",
    "Fill",
    "MalformedEventError",
    "ModelPromoted",
    "NewsItem",
    "Order",
    "Received",
    "SchedulerTick",
    "SchemaMismatchError",
    "Signal",
    "Topic",
    "UnsupportedSchemaVersionError",
    "build_cloudevent",
    "decode_cloudevent",
    "decode_pubsub_message",
    "decode_push_envelope",
    "derive_id",
    "event_attributes",
    "event_from_payload",
    "model_for_topic",
    "parse_cloudevent",
    "pubsub_cloudevent",
    "pubsub_push_envelope",
]

#: The schema version every model here writes. Readers accept :attr:`Event.SCHEMA_VERSIONS`.
SCHEMA_VERSION = 1

#: CloudEvent type of a Pub/Sub delivery (Eventarc trigger or converted push request).
PUBSUB_MESSAGE_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"

# Fixed namespace for derived ids: uuid5(NAMESPACE_URL, "https://stocktrade.dev/events").
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://stocktrade.dev/events")


class Topic(StrEnum):
    """Pub/Sub topics (kebab-case, as in DESIGN.md's Events table)."""

    MARKET_BARS = "market-bars"
    SIGNALS = "signals"
    ORDERS = "orders"
    FILLS = "fills"
    NEWS = "news"
    MODEL_PROMOTED = "model-promoted"
    SCHEDULER_TICKS = "scheduler-ticks"


# -- errors ---------------------------------------------------------------------------------
class EventDecodeError(PermanentError):
    """A message that can never become an event; retrying cannot help (dead letter it).

    Attributes:
        message_id: the Pub/Sub message id or CloudEvent id, when known.
        payload: the undecodable payload as text (truncated), for the dead-letter record.
    """

    def __init__(
        self, message: str, *, message_id: str | None = None, payload: str | None = None
    ) -> None:
        super().__init__(message)
        self.message_id = message_id
        self.payload = payload[:10_000] if payload is not None else None


class MalformedEventError(EventDecodeError):
    """The envelope is broken: bad base64, bad JSON, missing fields, wrong event type."""


class UnsupportedSchemaVersionError(EventDecodeError):
    """The payload's ``schema_version`` is one this code does not read."""


class SchemaMismatchError(EventDecodeError):
    """The payload is JSON of a supported version but does not fit the event model."""


# -- field types ----------------------------------------------------------------------------
def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""An aware datetime, converted to UTC; naive datetimes are rejected."""

Symbol = Annotated[
    str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9./:_-]*$")
]
Price = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
Quantity = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
PositiveQuantity = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
Fee = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
ClientOrderId = Annotated[str, StringConstraints(min_length=1, max_length=128)]


def derive_id(kind: str, *parts: object) -> str:
    """A deterministic event id: ``uuid5`` of ``kind`` and the natural key parts.

    Datetimes are written in UTC ISO 8601, so equal instants give equal ids whatever their
    time zone. Use it for ids the chain must recompute identically on a redelivery (e.g. a
    ``client_order_id`` derived from agent, symbol and bar time).
    """
    text = [kind]
    for part in parts:
        if isinstance(part, datetime):
            text.append(part.astimezone(UTC).isoformat())
        else:
            text.append(str(part))
    return str(uuid.uuid5(_ID_NAMESPACE, "|".join(text)))


# -- models ---------------------------------------------------------------------------------
class Event(BaseModel):
    """Base of every event payload: frozen, strict about unknown fields, versioned.

    Subclasses set :attr:`TOPIC`, :attr:`EVENT_TYPE` and implement :meth:`_natural_id`;
    ``event_id`` is filled from it when absent and must equal it when present.
    """

    # defer_build: a function validates one or two event types; building the other schemas at
    # import would only lengthen its cold start.
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    TOPIC: ClassVar[Topic]
    EVENT_TYPE: ClassVar[str]
    SCHEMA_VERSIONS: ClassVar[frozenset[int]] = frozenset({SCHEMA_VERSION})

    schema_version: int = SCHEMA_VERSION
    event_id: str = ""

    @model_validator(mode="before")
    @classmethod
    def _check_schema_version(cls, data: Any) -> Any:
        # Raised outside pydantic's ValueError handling on purpose: an unknown version is its
        # own, clearly named error, not one line among field errors.
        if isinstance(data, Mapping) and "schema_version" in data:
            version = data["schema_version"]
            if type(version) is not int or version not in cls.SCHEMA_VERSIONS:
                raise UnsupportedSchemaVersionError(
                    f"{cls.__name__} schema_version {version!r} is not supported; expected one "
                    f"of {sorted(cls.SCHEMA_VERSIONS)}"
                )
        return data

    @model_validator(mode="after")
    def _fill_event_id(self) -> Event:
        natural = self._natural_id()
        if natural is None:
            if not self.event_id:
                object.__setattr__(self, "event_id", str(uuid.uuid4()))
        elif not self.event_id:
            # Frozen models have no setter; this runs once, inside validation.
            object.__setattr__(self, "event_id", natural)
        elif self.event_id != natural:
            raise ValueError(
                f"event_id {self.event_id!r} does not match the {type(self).__name__}'s natural "
                f"key; expected {natural!r} (or leave event_id out)"
            )
        return self

    def _natural_id(self) -> str | None:
        raise NotImplementedError

    @property
    def ordering_key(self) -> str | None:
        """The Pub/Sub ordering key of this event (``None``: unordered)."""
        return None

    @property
    def occurred_at(self) -> datetime:
        """When the fact happened (the CloudEvent ``time``)."""
        raise NotImplementedError

    def to_json_bytes(self) -> bytes:
        """The wire form: compact JSON, decimals as strings, times in UTC."""
        return self.model_dump_json().encode()


class Bar(Event):
    """An OHLCV bar from a market feed or a replay.

    ``ts`` is the bar's open time; ``source`` names the feed (``alpaca``, ``polygon``,
    ``replay``, ...) and is part of the event id.
    """

    TOPIC: ClassVar[Topic] = Topic.MARKET_BARS
    EVENT_TYPE: ClassVar[str] = "stocktrade.market.bar"

    symbol: Symbol
    timeframe: Timeframe
    ts: UtcDatetime
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Quantity
    source: Annotated[str, StringConstraints(min_length=1, max_length=64)]

    @model_validator(mode="after")
    def _consistent_ohlc(self) -> Bar:
        problems = bar_problems(self.open, self.high, self.low, self.close, self.volume)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _natural_id(self) -> str:
        return derive_id("bar", self.source, self.symbol, self.timeframe.value, self.ts)

    @property
    def ordering_key(self) -> str:
        return self.symbol

    @property
    def occurred_at(self) -> datetime:
        return self.ts

    def to_domain(self) -> DomainBar:
        """The domain bar (:class:`stocktrade.domain.bars.Bar`)."""
        return DomainBar(
            self.symbol,
            self.timeframe,
            self.ts,
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume,
            self.source,
        )

    @classmethod
    def from_domain(cls, bar: DomainBar, source: str | None = None) -> Bar:
        """The event for a domain bar; ``source`` overrides ``bar.source``."""
        return cls(
            symbol=bar.symbol,
            timeframe=bar.timeframe,
            ts=bar.ts,
            open=bar.open,
            high=bar.high,
            low=bar.low,
            close=bar.close,
            volume=bar.volume,
            source=source or bar.source or "unknown",
        )

    @classmethod
    def from_farm_message(
        cls, message: Mapping[str, Any], timeframe: Timeframe = Timeframe.M1
    ) -> Bar:
        """Read a Farm Mark II market-data message (``{"type": "bar", "timestamp", ...}``).

        Its prices are JSON floats; each is converted through its shortest repr, so
        ``150.25`` becomes ``Decimal("150.25")``. Farm messages carry no timeframe (they are
        minute bars from the Alpaca stream), hence the ``timeframe`` argument.

        Raises:
            SchemaMismatchError: the message is not a Farm bar message.
        """
        if message.get("type") != "bar":
            raise SchemaMismatchError(
                f"expected a Farm Mark II message with type 'bar', found type {message.get('type')!r}"
            )
        expected = {
            "type",
            "symbol",
            "timestamp",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "source",
        }
        unknown = set(message) - expected
        if unknown:
            raise SchemaMismatchError(f"unexpected fields in Farm bar message: {sorted(unknown)}")

        def dec(name: str) -> Any:
            value = message.get(name)
            return Decimal(repr(value)) if isinstance(value, float) else value

        fields = {
            "symbol": message.get("symbol"),
            "timeframe": timeframe,
            "ts": message.get("timestamp"),
            **{name: dec(name) for name in ("open", "high", "low", "close", "volume")},
            "source": message.get("source") or "farm",
        }
        try:
            return cls.model_validate(fields)
        except PydanticValidationError as exc:
            raise SchemaMismatchError(f"invalid Farm bar message: {_summary(exc)}") from exc


class Signal(Event):
    """What an agent's policy or strategy decided on one bar, before risk and sizing."""

    TOPIC: ClassVar[Topic] = Topic.SIGNALS
    EVENT_TYPE: ClassVar[str] = "stocktrade.agent.signal"

    agent_id: uuid.UUID
    symbol: Symbol
    bar_ts: UtcDatetime
    action: Literal["hold", "buy", "sell"]
    confidence: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    probs: tuple[Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)], ...] | None = None
    model_version_id: uuid.UUID | None = None
    inference_backend: Annotated[str, StringConstraints(max_length=64)] = ""
    inference_latency_us: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    bar_event_id: str | None = None

    def _natural_id(self) -> str:
        return derive_id("signal", self.agent_id, self.symbol, self.bar_ts)

    @property
    def ordering_key(self) -> str:
        return str(self.agent_id)

    @property
    def occurred_at(self) -> datetime:
        return self.bar_ts


class Order(Event):
    """An order an agent sends to its broker; ``event_id`` is the ``client_order_id``.

    Either ``qty`` (shares) or ``target_fraction`` (target position as a fraction of equity,
    sized by the broker at fill time) is set.
    """

    TOPIC: ClassVar[Topic] = Topic.ORDERS
    EVENT_TYPE: ClassVar[str] = "stocktrade.agent.order"

    client_order_id: ClientOrderId
    agent_id: uuid.UUID
    symbol: Symbol
    side: Side
    qty: PositiveQuantity | None = None
    target_fraction: Annotated[Decimal, Field(ge=-10, le=10, allow_inf_nan=False)] | None = None
    order_type: OrderType = OrderType.MARKET
    bar_ts: UtcDatetime
    decision_id: uuid.UUID | None = None
    reason: Annotated[str, StringConstraints(max_length=500)] = ""

    @model_validator(mode="after")
    def _sized(self) -> Order:
        if self.qty is None and self.target_fraction is None:
            raise ValueError("an order needs qty or target_fraction, found neither")
        return self

    def _natural_id(self) -> str:
        return self.client_order_id

    @property
    def ordering_key(self) -> str:
        return str(self.agent_id)

    @property
    def occurred_at(self) -> datetime:
        return self.bar_ts


class Fill(Event):
    """An execution reported by a broker; ``event_id`` is the ``fill_id``."""

    TOPIC: ClassVar[Topic] = Topic.FILLS
    EVENT_TYPE: ClassVar[str] = "stocktrade.agent.fill"

    fill_id: ClientOrderId
    client_order_id: ClientOrderId
    agent_id: uuid.UUID
    symbol: Symbol
    side: Side
    qty: PositiveQuantity
    price: Price
    fee: Fee = Decimal(0)
    ts: UtcDatetime

    def _natural_id(self) -> str:
        return self.fill_id

    @property
    def ordering_key(self) -> str:
        return str(self.agent_id)

    @property
    def occurred_at(self) -> datetime:
        return self.ts


class NewsItem(Event):
    """A news article with the symbols it mentions and, once scored, its sentiment."""

    TOPIC: ClassVar[Topic] = Topic.NEWS
    EVENT_TYPE: ClassVar[str] = "stocktrade.news.item"

    news_id: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    symbols: tuple[Symbol, ...] = ()
    published_at: UtcDatetime
    headline: Annotated[str, StringConstraints(min_length=1, max_length=2_000)]
    url: str | None = None
    source: str | None = None
    sentiment: Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)] | None = None

    def _natural_id(self) -> str:
        return derive_id("news", self.news_id)

    @property
    def occurred_at(self) -> datetime:
        return self.published_at


class ModelPromoted(Event):
    """A model version passed its gate and now serves its agent."""

    TOPIC: ClassVar[Topic] = Topic.MODEL_PROMOTED
    EVENT_TYPE: ClassVar[str] = "stocktrade.model.promoted"

    model_version_id: uuid.UUID
    agent_id: uuid.UUID | None = None
    agent_name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    version: Annotated[int, Field(gt=0)]
    uri_onnx: Annotated[str, StringConstraints(min_length=1)]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    promoted_at: UtcDatetime

    def _natural_id(self) -> str:
        # A rollback re-promotes an old version: each promotion is its own event.
        return derive_id("model-promoted", self.model_version_id, self.promoted_at.isoformat())

    @property
    def ordering_key(self) -> str:
        return self.agent_name

    @property
    def occurred_at(self) -> datetime:
        return self.promoted_at


class SchedulerTick(Event):
    """A Cloud Scheduler tick naming the cron job to run."""

    TOPIC: ClassVar[Topic] = Topic.SCHEDULER_TICKS
    EVENT_TYPE: ClassVar[str] = "stocktrade.scheduler.tick"

    job: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    scheduled_at: UtcDatetime | None = None

    def _natural_id(self) -> str | None:
        # Scheduler messages are fixed text; without a time each tick is its own event.
        return derive_id("tick", self.job, self.scheduled_at) if self.scheduled_at else None

    @property
    def occurred_at(self) -> datetime:
        return self.scheduled_at or datetime.now(UTC)


EVENT_MODELS: dict[Topic, type[Event]] = {
    m.TOPIC: m for m in (Bar, Signal, Order, Fill, NewsItem, ModelPromoted, SchedulerTick)
}

E = TypeVar("E", bound=Event)


def model_for_topic(topic: str) -> type[Event]:
    """The event model published on ``topic``.

    Raises:
        MalformedEventError: ``topic`` is not one of :class:`Topic`.
    """
    try:
        return EVENT_MODELS[Topic(topic)]
    except ValueError:
        raise MalformedEventError(
            f"unknown topic {topic!r}; expected one of {[t.value for t in Topic]}"
        ) from None


def event_attributes(event: Event) -> dict[str, str]:
    """Pub/Sub message attributes for ``event`` (all strings, as Pub/Sub requires)."""
    return {
        "event_type": event.EVENT_TYPE,
        "schema_version": str(event.schema_version),
        "event_id": event.event_id,
    }


def event_from_payload(model: type[E], payload: Any, *, message_id: str | None = None) -> E:
    """Validate a decoded JSON payload as ``model``.

    Raises:
        UnsupportedSchemaVersionError: ``schema_version`` is missing or unknown.
        SchemaMismatchError: the payload does not fit the model.
        MalformedEventError: the payload is not a JSON object.
    """
    text = _dump(payload)
    if not isinstance(payload, Mapping):
        raise MalformedEventError(
            f"expected a JSON object for {model.__name__}, found {type(payload).__name__}",
            message_id=message_id,
            payload=text,
        )
    if "schema_version" not in payload:
        if model is Bar and payload.get("type") == "bar":
            try:
                return Bar.from_farm_message(payload)  # type: ignore[return-value]
            except EventDecodeError as exc:
                exc.message_id, exc.payload = message_id, text
                raise
        raise UnsupportedSchemaVersionError(
            f"{model.__name__} payload has no schema_version; expected one of "
            f"{sorted(model.SCHEMA_VERSIONS)}",
            message_id=message_id,
            payload=text,
        )
    try:
        return model.model_validate(payload)
    except EventDecodeError as exc:
        exc.message_id, exc.payload = message_id, text
        raise
    except PydanticValidationError as exc:
        raise SchemaMismatchError(
            f"payload does not fit {model.__name__} v{payload.get('schema_version')}: "
            f"{_summary(exc)}",
            message_id=message_id,
            payload=text,
        ) from exc


def _summary(exc: PydanticValidationError) -> str:
    parts = []
    for err in exc.errors()[:8]:
        where = ".".join(str(p) for p in err["loc"]) or "(payload)"
        parts.append(f"{where}: {err['msg']} (found {err.get('input')!r})"[:300])
    return "; ".join(parts)


def _dump(payload: Any) -> str:
    if isinstance(payload, bytes):
        return payload.decode("utf-8", errors="replace")
    if isinstance(payload, str):
        return payload
    try:
        return json.dumps(payload, default=str)
    except (TypeError, ValueError):
        return repr(payload)


# -- received messages ----------------------------------------------------------------------
@dataclass(frozen=True)
class Received(Generic[E]):
    """A decoded event and what the transport said about it.

    Attributes:
        event: the typed payload.
        message_id: Pub/Sub ``messageId`` (or the CloudEvent id for a direct CloudEvent).
        publish_time: when Pub/Sub accepted it, if known.
        ordering_key: the message's ordering key, if the transport kept it.
        attributes: Pub/Sub message attributes.
        source: the CloudEvent source (``//pubsub.googleapis.com/projects/P/topics/T``).
        subscription: the push subscription, when the raw envelope named it.
        delivery_attempt: Pub/Sub's attempt counter (only with a dead-letter policy).
    """

    event: E
    message_id: str | None = None
    publish_time: datetime | None = None
    ordering_key: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    source: str | None = None
    subscription: str | None = None
    delivery_attempt: int | None = None

    @property
    def topic(self) -> str | None:
        """The topic named by the CloudEvent source (``.../topics/<topic>``), if any."""
        if self.source and "/topics/" in self.source:
            return self.source.rsplit("/topics/", 1)[1] or None
        return None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def decode_pubsub_message(
    message: Any, model: type[E], *, source: str | None = None, subscription: str | None = None
) -> Received[E]:
    """Decode a Pub/Sub ``message`` object (``data`` base64, ``attributes``, ``messageId``).

    Raises:
        EventDecodeError: see :func:`event_from_payload`; also a bad envelope, bad base64 or
            JSON, or an ``event_type`` attribute naming another model.
    """
    if not isinstance(message, Mapping):
        raise MalformedEventError(
            f"expected a Pub/Sub message object, found {type(message).__name__}",
            payload=_dump(message),
        )
    message_id = message.get("messageId") or message.get("message_id")
    message_id = str(message_id) if message_id is not None else None
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise MalformedEventError(
            f"message attributes must be an object, found {attributes!r}",
            message_id=message_id,
            payload=_dump(message),
        )
    encoded = message.get("data")
    if not isinstance(encoded, str) or not encoded:
        raise MalformedEventError(
            "Pub/Sub message has no data; expected base64 JSON",
            message_id=message_id,
            payload=_dump(message),
        )
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedEventError(
            f"message data is not valid base64: {exc}", message_id=message_id, payload=encoded
        ) from exc
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedEventError(
            f"message data is not JSON: {exc}", message_id=message_id, payload=_dump(raw)
        ) from exc
    declared = attributes.get("event_type")
    if declared is not None and declared != model.EVENT_TYPE:
        raise SchemaMismatchError(
            f"expected event_type {model.EVENT_TYPE!r}, found {declared!r}",
            message_id=message_id,
            payload=_dump(raw),
        )
    event = event_from_payload(model, payload, message_id=message_id)
    attempt = str(message.get("deliveryAttempt") or message.get("delivery_attempt") or "")
    return Received(
        event=event,
        message_id=message_id,
        publish_time=_parse_time(message.get("publishTime") or message.get("publish_time")),
        ordering_key=message.get("orderingKey") or message.get("ordering_key") or None,
        attributes=dict(attributes),
        source=source,
        subscription=subscription,
        delivery_attempt=int(attempt) if attempt.isdigit() else None,
    )


def decode_push_envelope(body: bytes | str | Mapping[str, Any], model: type[E]) -> Received[E]:
    """Decode the JSON body Pub/Sub POSTs to a push endpoint.

    ``{"message": {"data", "attributes", "messageId", "publishTime", "orderingKey"?},
    "subscription": "projects/P/subscriptions/S"}``.

    Raises:
        EventDecodeError: the body or the message inside it cannot be decoded as ``model``.
    """
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MalformedEventError(f"push body is not JSON: {exc}", payload=_dump(body)) from exc
    if not isinstance(body, Mapping) or "message" not in body:
        raise MalformedEventError("push body must be an object with 'message'", payload=_dump(body))
    subscription = body.get("subscription")
    received = decode_pubsub_message(
        body["message"], model, subscription=str(subscription) if subscription else None
    )
    attempt = str(body.get("deliveryAttempt") or "")
    if received.delivery_attempt is None and attempt.isdigit():
        received = dataclasses.replace(received, delivery_attempt=int(attempt))
    return received


def _ce_get(event: Any, name: str) -> Any:
    getter = getattr(event, "get", None)
    if callable(getter):
        return getter(name)
    try:
        return event[name]
    except (KeyError, TypeError):
        return None


def decode_cloudevent(event: Any, model: type[E]) -> Received[E]:
    """Decode a CloudEvent delivered to a function into ``model``, with transport metadata.

    Accepts a ``cloudevents`` CloudEvent (what functions-framework passes) or a structured
    CloudEvent as a dict. Two kinds are understood:

    * a Pub/Sub delivery (type ``google.cloud.pubsub.topic.v1.messagePublished``), whose
      data is ``{"message": {...}, "subscription"?}`` (functions-framework builds this from a
      raw push request too, dropping ``subscription`` and ``orderingKey``);
    * a direct CloudEvent of this model's type (``stocktrade.market.bar`` ...) whose data is
      the event's JSON, as built by :func:`build_cloudevent`.

    Raises:
        EventDecodeError: anything else, or a payload that does not decode.
    """
    ce_type = _ce_get(event, "type")
    ce_id = _ce_get(event, "id")
    ce_id = str(ce_id) if ce_id is not None else None
    source = _ce_get(event, "source")
    data = getattr(event, "data", None) if not isinstance(event, Mapping) else event.get("data")
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MalformedEventError(
                f"CloudEvent data is not JSON: {exc}", message_id=ce_id, payload=_dump(data)
            ) from exc
    if ce_type == PUBSUB_MESSAGE_PUBLISHED:
        if not isinstance(data, Mapping) or "message" not in data:
            raise MalformedEventError(
                "Pub/Sub CloudEvent data must be an object with 'message'",
                message_id=ce_id,
                payload=_dump(data),
            )
        subscription = data.get("subscription")
        received = decode_pubsub_message(
            data["message"],
            model,
            source=source,
            subscription=str(subscription) if subscription else None,
        )
        if received.message_id is None and ce_id is not None:
            received = dataclasses.replace(received, message_id=ce_id)
        return received
    if ce_type == model.EVENT_TYPE:
        return Received(
            event=event_from_payload(model, data, message_id=ce_id),
            message_id=ce_id,
            publish_time=_parse_time(_ce_get(event, "time")),
            source=source,
        )
    raise MalformedEventError(
        f"expected a CloudEvent of type {PUBSUB_MESSAGE_PUBLISHED!r} or {model.EVENT_TYPE!r}, "
        f"found {ce_type!r}",
        message_id=ce_id,
        payload=_dump(data),
    )


def parse_cloudevent(event: Any, model: type[E]) -> E:
    """The typed event inside a CloudEvent (see :func:`decode_cloudevent`)."""
    return decode_cloudevent(event, model).event


# -- building envelopes ---------------------------------------------------------------------
def build_cloudevent(event: Event, *, source: str | None = None) -> Any:
    """A direct (structured-mode) CloudEvent for ``event``.

    ``type`` is the model's :attr:`~Event.EVENT_TYPE`, ``id`` the ``event_id``, ``time`` the
    event's :attr:`~Event.occurred_at`, and ``data`` its JSON. Returns a
    ``cloudevents.http.CloudEvent`` (imported here, so the schema module stays light).
    """
    from cloudevents.http import CloudEvent

    attributes = {
        "type": event.EVENT_TYPE,
        "source": source or f"//stocktrade/{event.TOPIC.value}",
        "id": event.event_id,
        "time": event.occurred_at.isoformat(),
        "datacontenttype": "application/json",
        "schemaversion": str(event.schema_version),
    }
    return CloudEvent(attributes, event.model_dump(mode="json"))


def pubsub_push_envelope(
    event: Event | bytes,
    *,
    message_id: str | None = None,
    publish_time: datetime | None = None,
    ordering_key: str | None = None,
    attributes: Mapping[str, str] | None = None,
    project: str = "local-project",
    subscription: str | None = None,
    topic: str | None = None,
) -> dict[str, Any]:
    """The body Pub/Sub would POST to a push endpoint for ``event`` (or raw ``bytes`` data).

    Useful for tests and local tools; ``bytes`` lets a test send a payload that is not an
    event at all.
    """
    if isinstance(event, Event):
        data = event.to_json_bytes()
        attrs = {**event_attributes(event), **(attributes or {})}
        key = ordering_key if ordering_key is not None else event.ordering_key
        topic = topic or event.TOPIC.value
    else:
        data, attrs, key = event, dict(attributes or {}), ordering_key
    message_id = message_id or str(uuid.uuid4().int % 10**16)
    when = (publish_time or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")
    message: dict[str, Any] = {
        "data": base64.b64encode(data).decode(),
        "attributes": attrs,
        "messageId": message_id,
        "message_id": message_id,
        "publishTime": when,
        "publish_time": when,
    }
    if key:
        message["orderingKey"] = key
    return {
        "message": message,
        "subscription": f"projects/{project}/subscriptions/{subscription or (topic or 'sub') + '-push'}",
    }


def pubsub_cloudevent(
    event: Event | bytes,
    *,
    message_id: str | None = None,
    publish_time: datetime | None = None,
    ordering_key: str | None = None,
    attributes: Mapping[str, str] | None = None,
    project: str = "local-project",
    topic: str | None = None,
) -> Any:
    """The CloudEvent an Eventarc Pub/Sub trigger delivers for ``event`` (or raw ``bytes``).

    Post it to a function with ``cloudevents.conversion.to_structured``.
    """
    from cloudevents.http import CloudEvent

    if isinstance(event, Event):
        topic = topic or event.TOPIC.value
    envelope = pubsub_push_envelope(
        event,
        message_id=message_id,
        publish_time=publish_time,
        ordering_key=ordering_key,
        attributes=attributes,
        project=project,
        topic=topic,
    )
    message = envelope["message"]
    attrs = {
        "type": PUBSUB_MESSAGE_PUBLISHED,
        "source": f"//pubsub.googleapis.com/projects/{project}/topics/{topic or 'unknown'}",
        "id": message["messageId"],
        "time": message["publishTime"],
        "datacontenttype": "application/json",
    }
    return CloudEvent(attrs, envelope)
