"""The in-process event bus: Pub/Sub's delivery rules, synchronous and deterministic.

It is the embedded default (no accounts, no emulator) and what backtests and replays use.
Semantics, chosen to match Pub/Sub where it matters to handlers:

* Each subscription gets every event published on its topic after it subscribed.
* Delivery is FIFO: publishing outside a handler delivers at once (the call returns after
  the whole cascade ran); events published *by* a handler are queued and delivered after
  that handler returns, so handlers never nest (re-entrancy safe).
* A handler that raises leaves its delivery at the head of the queue (the next
  :meth:`~InProcessEventBus.drain` or publish retries it, with ``attempt + 1``) and the
  error propagates to whoever triggered the delivery: failures are loud, nothing is dropped.

Test hooks make the adversarial cases of real Pub/Sub reproducible:

* ``redeliver=True`` delivers every event twice (the copy is queued behind later events,
  so it also arrives out of order);
* ``shuffle_seed=N`` permutes queued deliveries that share an ordering key (seeded), as a
  subscription without message ordering may;
* :meth:`~InProcessEventBus.crash_on` raises :class:`SimulatedCrashError` at a chosen point
  (``publish``, ``before_deliver``, ``after_deliver``), optionally only for one topic or
  subscriber, a given number of times;
* every publication and delivery attempt is recorded (:attr:`published`, :attr:`delivered`);
  :meth:`paused` queues publications so a test can build a backlog before draining it.

Not thread-safe by design (one bus per thread of execution, like a backtest).
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from stocktrade.errors import ValidationError
from stocktrade.logging import get_logger
from stocktrade.schemas.events import Event, Topic

__all__ = ["CrashPoint", "Delivered", "InProcessEventBus", "Published", "SimulatedCrashError"]

log = get_logger(__name__)

CrashPoint = Literal["publish", "before_deliver", "after_deliver"]
_CRASH_POINTS = ("publish", "before_deliver", "after_deliver")


class SimulatedCrashError(RuntimeError):
    """Raised by a crash hook: the process 'died' at the chosen point."""


@dataclass(frozen=True, slots=True)
class Published:
    """One accepted publication (``at``: ``time.perf_counter()`` when it was accepted)."""

    seq: int
    message_id: str
    topic: str
    event: Event
    ordering_key: str | None
    at: float


@dataclass(frozen=True, slots=True)
class Delivered:
    """One delivery attempt of one message to one subscription (``at``: when it ended)."""

    seq: int
    message_id: str
    topic: str
    subscriber: str
    event: Event
    ordering_key: str | None
    attempt: int
    ok: bool
    at: float


@dataclass(frozen=True, slots=True)
class _Subscription:
    topic: str
    name: str
    handler: Callable[[Event], None]


@dataclass(slots=True)
class _Item:
    message_id: str
    topic: str
    event: Event
    ordering_key: str | None
    subscription: _Subscription
    attempt: int = 1
    copy: bool = False  # an injected redelivery (never copied again)


@dataclass(slots=True)
class _CrashRule:
    point: str
    topic: str | None
    subscriber: str | None
    remaining: int
    error: BaseException | None = field(default=None)


class InProcessEventBus:
    """Synchronous, deterministic :class:`~stocktrade.ports.EventBus`.

    Args:
        redeliver: deliver every event twice (the second copy after later events).
        shuffle_seed: if set, shuffle queued deliveries within each ordering key with this seed.
        record: keep :attr:`published` and :attr:`delivered` (turn off for long backtests).
    """

    def __init__(
        self, *, redeliver: bool = False, shuffle_seed: int | None = None, record: bool = True
    ) -> None:
        self.redeliver = redeliver
        self.record = record
        self._rng = random.Random(shuffle_seed) if shuffle_seed is not None else None
        self._subscriptions: dict[str, list[_Subscription]] = {}
        self._queue: deque[_Item] = deque()
        self._draining = False
        self._paused = 0
        self._crashes: list[_CrashRule] = []
        self._next_id = 0
        self._seq = 0
        self.published: list[Published] = []
        self.delivered: list[Delivered] = []

    # -- subscribing and publishing -------------------------------------------------------
    def subscribe(
        self, topic: str, handler: Callable[[Event], None], *, name: str | None = None
    ) -> str:
        """Add a subscription to ``topic``; returns its name (default: the handler's name).

        Raises:
            ValidationError: unknown topic, or a subscription of that name already exists.
        """
        topic = _topic(topic)
        name = name or getattr(handler, "__qualname__", None) or repr(handler)
        subs = self._subscriptions.setdefault(topic, [])
        if any(s.name == name for s in subs):
            raise ValidationError(f"topic {topic!r} already has a subscription named {name!r}")
        subs.append(_Subscription(topic, name, handler))
        return name

    def publish(self, topic: str, event: Event, ordering_key: str | None = None) -> str:
        """Queue ``event`` for every subscription of ``topic``, then deliver (unless in a handler).

        Returns the message id (``m1``, ``m2``, ...).

        Raises:
            ValidationError: ``topic`` is unknown or is not the event's topic.
            SimulatedCrashError: a ``publish`` crash hook fired (nothing was queued).
            Exception: whatever a handler raised while this call delivered.
        """
        message_id = self._accept(topic, event, ordering_key)
        self._drain_unless_busy()
        return message_id

    def publish_many(
        self, items: Sequence[tuple[str, Event, str | None]]
    ) -> list[str | BaseException]:
        """Queue several events, then deliver them.

        A publication that fails (a crash hook) is reported in place of its message id, and
        later items with the same ordering key are not published (as Pub/Sub pauses a key
        after a failure), so order within a key is never broken.
        """
        results: list[str | BaseException] = []
        failed_keys: set[tuple[str, str]] = set()
        for topic, event, key in items:
            resolved = _resolve_key(event, key)
            if resolved is not None and (topic, resolved) in failed_keys:
                results.append(
                    SimulatedCrashError(f"ordering key {resolved!r} paused by an earlier failure")
                )
                continue
            try:
                results.append(self._accept(topic, event, key))
            except (SimulatedCrashError, ValidationError) as exc:
                results.append(exc)
                if resolved is not None:
                    failed_keys.add((topic, resolved))
        self._drain_unless_busy()
        return results

    def _accept(self, topic: str, event: Event, ordering_key: str | None) -> str:
        topic = _topic(topic)
        if event.TOPIC.value != topic:
            raise ValidationError(
                f"a {type(event).__name__} belongs on topic {event.TOPIC.value!r}, not {topic!r}"
            )
        self._maybe_crash("publish", topic, None)
        key = _resolve_key(event, ordering_key)
        self._next_id += 1
        message_id = f"m{self._next_id}"
        if self.record:
            self._seq += 1
            self.published.append(
                Published(self._seq, message_id, topic, event, key, time.perf_counter())
            )
        for sub in self._subscriptions.get(topic, []):
            self._queue.append(_Item(message_id, topic, event, key, sub))
        return message_id

    # -- delivering -----------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Deliveries queued and not yet done."""
        return len(self._queue)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Queue publications without delivering; deliver everything on exit."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1
        self._drain_unless_busy()

    def _drain_unless_busy(self) -> None:
        if not self._draining and not self._paused:
            self.drain()

    def drain(self) -> int:
        """Deliver queued messages until the queue is empty; returns deliveries made.

        Called inside a handler it does nothing (the outer drain delivers). A handler's
        exception stops the drain and propagates; the failed delivery stays first in line.
        """
        if self._draining:
            return 0
        self._draining = True
        done = 0
        try:
            while self._queue:
                batch = list(self._queue)
                self._queue.clear()
                if self._rng is not None:
                    batch = self._shuffle_within_keys(batch)
                for position, item in enumerate(batch):
                    try:
                        self._deliver(item)
                    except BaseException:
                        item.attempt += 1
                        # The failed item and the rest of its batch go back in front, in order;
                        # whatever handlers published meanwhile stays behind them.
                        self._queue.extendleft(reversed(batch[position:]))
                        raise
                    done += 1
        finally:
            self._draining = False
        return done

    def _deliver(self, item: _Item) -> None:
        sub = item.subscription
        self._maybe_crash("before_deliver", item.topic, sub.name)
        ok = False
        try:
            sub.handler(item.event)
            ok = True
        finally:
            if self.record:
                self._seq += 1
                self.delivered.append(
                    Delivered(
                        self._seq,
                        item.message_id,
                        item.topic,
                        sub.name,
                        item.event,
                        item.ordering_key,
                        item.attempt,
                        ok,
                        time.perf_counter(),
                    )
                )
        # The handler finished but the "process" dies before acknowledging: redelivered.
        self._maybe_crash("after_deliver", item.topic, sub.name)
        if self.redeliver and not item.copy:
            self._queue.append(
                _Item(
                    item.message_id,
                    item.topic,
                    item.event,
                    item.ordering_key,
                    sub,
                    attempt=item.attempt + 1,
                    copy=True,
                )
            )

    def _shuffle_within_keys(self, batch: list[_Item]) -> list[_Item]:
        assert self._rng is not None
        slots: dict[tuple[str, str, str | None], list[int]] = {}
        for i, item in enumerate(batch):
            slots.setdefault((item.topic, item.subscription.name, item.ordering_key), []).append(i)
        out = list(batch)
        for positions in slots.values():
            members = [batch[i] for i in positions]
            self._rng.shuffle(members)
            for i, member in zip(positions, members, strict=True):
                out[i] = member
        return out

    # -- test hooks -----------------------------------------------------------------------
    def crash_on(
        self,
        point: CrashPoint,
        *,
        topic: str | None = None,
        subscriber: str | None = None,
        times: int = 1,
        error: BaseException | None = None,
    ) -> None:
        """Raise at ``point`` the next ``times`` times it is reached (matching the filters).

        Args:
            point: ``publish`` (the publisher sees the error; nothing is queued),
                ``before_deliver`` (the handler is not called), or ``after_deliver`` (the
                handler ran but its acknowledgement is lost, so it is delivered again).
            topic: only for this topic.
            subscriber: only for this subscription name (delivery points).
            times: how many times to fire.
            error: the exception to raise (default :class:`SimulatedCrashError`).
        """
        if point not in _CRASH_POINTS:
            raise ValidationError(f"crash point must be one of {_CRASH_POINTS}, found {point!r}")
        self._crashes.append(_CrashRule(point, topic, subscriber, times, error))

    def _maybe_crash(self, point: str, topic: str, subscriber: str | None) -> None:
        for rule in self._crashes:
            if (
                rule.point == point
                and rule.remaining > 0
                and rule.topic in (None, topic)
                and rule.subscriber in (None, subscriber)
            ):
                rule.remaining -= 1
                log.info(
                    "simulated crash",
                    extra={"point": point, "topic": topic, "subscriber": subscriber},
                )
                raise rule.error or SimulatedCrashError(f"simulated crash at {point} on {topic}")

    def events(self, topic: str | None = None) -> list[Event]:
        """Events published (optionally on one topic), in order."""
        return [p.event for p in self.published if topic is None or p.topic == topic]

    def deliveries(
        self, subscriber: str | None = None, *, ok: bool | None = True
    ) -> list[Delivered]:
        """Delivery attempts, optionally for one subscription and by outcome."""
        return [
            d
            for d in self.delivered
            if (subscriber is None or d.subscriber == subscriber) and (ok is None or d.ok is ok)
        ]


def _topic(topic: str) -> str:
    try:
        return Topic(topic).value
    except ValueError:
        raise ValidationError(
            f"unknown topic {topic!r}; expected one of {[t.value for t in Topic]}"
        ) from None


def _resolve_key(event: Event, ordering_key: str | None) -> str | None:
    if ordering_key is None:
        return event.ordering_key
    return ordering_key or None
