"""Idempotent event handling, the transactional outbox, its relay, and dead letters.

Every handler of the live chain runs through :meth:`DeliveryService.handle`::

    def handle_bar(ctx: HandlerContext[Bar]) -> None:
        ctx.conn.execute("INSERT INTO ...", ...)          # effects, in the transaction
        ctx.outbox.add(Topic.SIGNALS, signal)               # events caused, same transaction
        ctx.mirror.write("agents", agent_id, {...})         # realtime mirror, after commit

    delivery.handle("on_bar", bar, handle_bar)

One database transaction (a) records ``(handler, event_id)`` in ``processed_events`` (if it
is already there the delivery is a duplicate and nothing runs), (b) runs the effect, which
writes its rows and adds the events it causes to the outbox, and (c) commits. Then the relay
publishes unpublished outbox rows and marks them published. A crash between commit and
publish loses nothing: the rows stay unpublished until the next relay run (any later
:meth:`~DeliveryService.handle`, including the redelivery of the same event, or
:meth:`~DeliveryService.relay_all` from the ``cron_relay`` function). A crash after publish
but before marking publishes again later; the copy carries the same ``event_id`` and the
downstream handler absorbs it.

Errors: transient ones (:class:`~stocktrade.errors.TransientError`, lost connections,
serialisation failures, unknown exceptions) propagate so the bus retries; permanent ones
(:class:`~stocktrade.errors.PermanentError`, :class:`~stocktrade.errors.ValidationError`,
pydantic validation errors, bad data rejected by the database) roll the effect back, are
stored in ``dead_letters`` with their reason, and the delivery is acknowledged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

from pydantic import ValidationError as PydanticValidationError

from stocktrade.errors import PermanentError, TransientError, ValidationError
from stocktrade.logging import get_logger
from stocktrade.ports import DeliveryStore, DeliveryTransaction, EventBus, Mirror
from stocktrade.schemas.events import (
    Event,
    EventDecodeError,
    Received,
    decode_cloudevent,
    event_attributes,
    model_for_topic,
)

__all__ = [
    "DeliveryResult",
    "DeliveryService",
    "Effect",
    "HandlerContext",
    "MirrorWrites",
    "Outbox",
    "Outcome",
    "RelayResult",
]

log = get_logger(__name__)

E = TypeVar("E", bound=Event)

RELAY_HANDLER = "outbox-relay"


class Outcome(StrEnum):
    """What :meth:`DeliveryService.handle` did with one delivery."""

    HANDLED = "handled"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True, slots=True)
class RelayResult:
    """One relay pass: rows published, rows left for later, and why."""

    published: int = 0
    failed: int = 0
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The outcome of one delivery and of the relay pass that followed it."""

    outcome: Outcome
    handler: str
    event_id: str | None
    reason: str | None = None
    relay: RelayResult = field(default_factory=RelayResult)


class Outbox:
    """Events an effect causes; stored in its transaction, published after commit."""

    def __init__(self, tx: DeliveryTransaction) -> None:
        self._tx = tx
        self.added: list[Event] = []

    def add(self, topic: str, event: Event, ordering_key: str | None = None) -> bool:
        """Queue ``event`` for ``topic``; ``ordering_key=None`` uses the event's own key.

        Returns ``False`` when an event with this ``event_id`` is already in the outbox
        (deterministic ids make recomputing the same event harmless).

        Raises:
            ValidationError: ``topic`` is not the event's topic.
        """
        if event.TOPIC.value != str(topic):
            raise ValidationError(
                f"a {type(event).__name__} belongs on topic {event.TOPIC.value!r}, not {topic!r}"
            )
        key = event.ordering_key if ordering_key is None else (ordering_key or None)
        stored = self._tx.add_outbox(
            event.TOPIC.value,
            event.event_id,
            key,
            event.model_dump(mode="json"),
            event_attributes(event),
        )
        if stored:
            self.added.append(event)
        return stored


class MirrorWrites:
    """Mirror writes an effect asks for; applied only after its transaction commits."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, str, dict[str, Any] | None]] = []

    def write(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        self.pending.append((collection, doc_id, dict(data)))

    def delete(self, collection: str, doc_id: str) -> None:
        self.pending.append((collection, doc_id, None))


@dataclass(slots=True)
class HandlerContext(Generic[E]):
    """What an effect gets.

    Attributes:
        handler: the handler name (``on_bar`` ...), the idempotency scope.
        event: the typed event being handled.
        conn: the database connection, inside the transaction (psycopg in production).
        outbox: where the effect puts the events it causes.
        mirror: realtime-mirror writes, applied after commit.
        received: transport metadata (message id, publish time, attempt) when known.
        deps: whatever the caller wired in (functions pass the bootstrap container), for
            lookups such as the policy cache or the broker.
    """

    handler: str
    event: E
    conn: Any
    outbox: Outbox
    mirror: MirrorWrites
    received: Received[E] | None = None
    deps: Any = None


Effect = Callable[[HandlerContext[E]], None]
"""A handler's business logic: writes rows and adds outbox events; never publishes itself."""


class DeliveryService:
    """Runs effects exactly once per (handler, event) and relays the events they cause.

    Args:
        store: processed ids, outbox and dead letters (``PostgresDeliveryStore``).
        bus: where the relay publishes.
        mirror: realtime mirror written after commits (``None``: off).
        deps: passed to every effect as :attr:`HandlerContext.deps`.
        relay_batch: outbox rows one relay pass publishes at most.
        lease_seconds: how long a relay may take to publish the rows it leased before
            another relay may take them.
        relay_after_handle: relay after each delivery (off: only explicit relays publish).
        fault: test hook called at ``"after_effect"`` (inside the transaction) and
            ``"after_commit"`` (before the relay); raising there simulates a crash.
    """

    def __init__(
        self,
        store: DeliveryStore,
        bus: EventBus,
        *,
        mirror: Mirror | None = None,
        deps: Any = None,
        relay_batch: int = 100,
        lease_seconds: float = 60.0,
        relay_after_handle: bool = True,
        fault: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.mirror = mirror
        self.deps = deps
        self.relay_batch = relay_batch
        self.lease_seconds = lease_seconds
        self.relay_after_handle = relay_after_handle
        self.fault = fault
        self._local = threading.local()

    # -- handling -------------------------------------------------------------------------
    def receive(
        self, handler: str, message: Any, model: type[E], effect: Effect[E]
    ) -> DeliveryResult:
        """Decode ``message`` as ``model`` and :meth:`handle` it.

        ``message`` is a CloudEvent (Pub/Sub delivery or direct, see
        :func:`~stocktrade.schemas.events.decode_cloudevent`), a :class:`Received`, or an
        event of type ``model`` (what the in-process bus delivers). A message that cannot
        be decoded is dead-lettered under ``msg:<message id>`` and acknowledged.
        """
        if isinstance(message, model):
            return self.handle(handler, message, effect)
        if isinstance(message, Received):
            return self.handle(handler, message.event, effect, received=message)
        try:
            received = decode_cloudevent(message, model)
        except EventDecodeError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            event_id = f"msg:{exc.message_id}" if exc.message_id else None
            self._dead_letter(
                handler, reason, event_id=event_id, topic=model.TOPIC.value, payload=exc.payload
            )
            return DeliveryResult(Outcome.DEAD_LETTERED, handler, event_id, reason)
        return self.handle(handler, received.event, effect, received=received)

    def handle(
        self, handler: str, event: E, effect: Effect[E], *, received: Received[E] | None = None
    ) -> DeliveryResult:
        """Run ``effect`` for ``event`` once per ``handler``, then relay the outbox.

        Returns:
            ``HANDLED``, ``DUPLICATE`` (already handled: nothing ran) or ``DEAD_LETTERED``
            (a permanent error: recorded and acknowledged), with the relay pass's result.

        Raises:
            TransientError: the effect hit a retryable failure, or the effect committed but
                its events could not all be published yet (a retry publishes them).
            Exception: any unclassified error, unchanged, so the bus retries.
        """
        if getattr(self._local, "active", False):
            raise RuntimeError(
                f"{handler} was called inside another handler's transaction; effects must add "
                "events to ctx.outbox instead of publishing or handling them directly"
            )
        extra = {"handler": handler, "event_id": event.event_id, "topic": event.TOPIC.value}
        mirror = MirrorWrites()
        self._local.active = True
        try:
            with self.store.transaction() as tx:
                if not tx.claim(handler, event.event_id):
                    outcome = Outcome.DUPLICATE
                else:
                    effect(
                        HandlerContext(
                            handler, event, tx.conn, Outbox(tx), mirror, received, self.deps
                        )
                    )
                    self._fault("after_effect")
                    outcome = Outcome.HANDLED
        except BaseException as exc:
            kind = self._classify(exc)
            if kind == "permanent":
                reason = f"{type(exc).__name__}: {exc}"
                self._dead_letter(
                    handler,
                    reason,
                    event_id=event.event_id,
                    topic=event.TOPIC.value,
                    payload=event.model_dump_json(),
                )
                return DeliveryResult(Outcome.DEAD_LETTERED, handler, event.event_id, reason)
            log.warning(
                "handler failed; the delivery will be retried",
                extra={**extra, "error": f"{type(exc).__name__}: {exc}"},
            )
            if kind == "transient" and not isinstance(exc, TransientError):
                raise TransientError(f"{handler} failed on {event.event_id}: {exc}") from exc
            raise
        finally:
            self._local.active = False

        log.debug("delivery " + outcome.value, extra=extra)
        self._fault("after_commit")
        if outcome is Outcome.HANDLED:
            self._apply_mirror(mirror)
        relay = self.relay() if self.relay_after_handle else RelayResult()
        if relay.failed:
            raise TransientError(
                f"{handler} committed {event.event_id} but {relay.failed} outbox event(s) are "
                f"not published yet ({'; '.join(relay.errors[:3])}); a retry publishes them"
            )
        return DeliveryResult(outcome, handler, event.event_id, relay=relay)

    def _classify(self, exc: BaseException) -> Literal["transient", "permanent"] | None:
        if isinstance(exc, TransientError):
            return "transient"
        if isinstance(exc, PermanentError | ValidationError | PydanticValidationError):
            return "permanent"
        if isinstance(exc, Exception):
            return self.store.classify_error(exc)
        return None  # KeyboardInterrupt, SystemExit, a simulated crash's BaseException

    def _fault(self, point: str) -> None:
        if self.fault is not None:
            self.fault(point)

    def _apply_mirror(self, writes: MirrorWrites) -> None:
        if self.mirror is None:
            return
        for collection, doc_id, data in writes.pending:
            try:
                if data is None:
                    self.mirror.delete(collection, doc_id)
                else:
                    self.mirror.write(collection, doc_id, data)
            except Exception as exc:  # the mirror is never the source of truth: log, go on
                log.warning(
                    "mirror write failed",
                    extra={"collection": collection, "doc_id": doc_id, "error": str(exc)},
                )

    # -- dead letters ---------------------------------------------------------------------
    def dead_letter(
        self,
        handler: str,
        reason: str,
        *,
        event_id: str | None = None,
        topic: str | None = None,
        payload: str | None = None,
    ) -> bool:
        """Record a message that can never be handled (``False`` if already recorded).

        Raises:
            TransientError: the record could not be written (so the message is retried).
        """
        return self._dead_letter(handler, reason, event_id=event_id, topic=topic, payload=payload)

    def _dead_letter(
        self,
        handler: str,
        reason: str,
        *,
        event_id: str | None,
        topic: str | None,
        payload: str | None,
    ) -> bool:
        log.warning(
            "dead letter",
            extra={
                "handler": handler,
                "event_id": event_id,
                "topic": topic,
                "reason": reason[:500],
            },
        )
        try:
            return self.store.record_dead_letter(
                handler, reason, event_id=event_id, topic=topic, payload=payload
            )
        except Exception as exc:
            raise TransientError(
                f"cannot record dead letter for {handler}/{event_id}: {exc}"
            ) from exc

    # -- relay ----------------------------------------------------------------------------
    def relay(self, limit: int | None = None) -> RelayResult:
        """Publish one batch of unpublished outbox rows, oldest first, and mark them.

        Rows that fail to publish are released for a later pass; after a failure on an
        ordering key, later rows with that key wait too, so order within a key holds for a
        single relay. (Concurrent relays may interleave rows of one key; handlers tolerate
        out-of-order delivery anyway.)
        """
        rows = self.store.claim_pending(limit or self.relay_batch, self.lease_seconds)
        if not rows:
            return RelayResult()
        items: list[tuple[str, Event, str | None]] = []
        sendable = []
        for row in rows:
            try:
                event = model_for_topic(row.topic).model_validate(row.payload)
            except (EventDecodeError, PydanticValidationError) as exc:
                # Cannot happen for rows written by Outbox.add; a hand-written row that does
                # not decode is moved to the dead letters instead of blocking the relay.
                self._dead_letter(
                    RELAY_HANDLER,
                    f"{type(exc).__name__}: {exc}",
                    event_id=str(row.id),
                    topic=row.topic,
                    payload=str(row.payload),
                )
                self.store.mark_published([row.id])
                continue
            items.append((row.topic, event, row.ordering_key or ""))
            sendable.append(row)
        if not items:
            return RelayResult()
        try:
            results = self.bus.publish_many(items)
        except Exception as exc:
            # An in-process bus delivers synchronously, so a downstream failure surfaces here
            # after the events were accepted; not knowing which, release all: republishing is
            # absorbed by the idempotent handlers downstream.
            self.store.release([r.id for r in sendable], f"{type(exc).__name__}: {exc}")
            raise
        published = [
            r.id
            for r, res in zip(sendable, results, strict=True)
            if not isinstance(res, BaseException)
        ]
        failures = [
            (r, res)
            for r, res in zip(sendable, results, strict=True)
            if isinstance(res, BaseException)
        ]
        self.store.mark_published(published)
        errors = tuple(f"{r.topic}/{r.event_id}: {type(e).__name__}: {e}" for r, e in failures)
        if failures:
            self.store.release([r.id for r, _ in failures], errors[0])
            log.warning(
                "outbox rows not published; they stay for the next relay",
                extra={"failed": len(failures), "first_error": errors[0]},
            )
        return RelayResult(published=len(published), failed=len(failures), errors=errors)

    def relay_all(self, *, max_batches: int = 100) -> RelayResult:
        """Relay until the outbox has nothing claimable or a pass publishes nothing."""
        published = failed = 0
        errors: list[str] = []
        for _ in range(max_batches):
            result = self.relay()
            published += result.published
            failed += result.failed
            errors.extend(result.errors)
            if result.published == 0:
                break
        return RelayResult(published, failed, tuple(errors))
