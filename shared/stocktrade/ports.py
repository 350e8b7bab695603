"""Ports: the small protocols every outside service sits behind.

Services depend on these; adapters implement them; :mod:`stocktrade.bootstrap` picks the
adapter from settings. Handlers never know whether they got the cloud or the local one.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol

from stocktrade.domain.bars import SymbolSummary, Timeframe, UpsertCounts

if TYPE_CHECKING:
    from stocktrade.data.arrays import BarArrays
    from stocktrade.data.csv_bars import BarFile
    from stocktrade.domain.broker import BrokerAccount, BrokerOrder, BrokerPosition, OrderRequest
    from stocktrade.domain.runs import Run
    from stocktrade.schemas.events import Event


class BarRepository(Protocol):
    """Stored bars (Postgres in every environment)."""

    def import_csv(
        self, data: bytes, path: str, *, source: str, timeframe: Timeframe | None = None,
        progress: Callable[[int], None] | None = None, workers: int = 2,
    ) -> tuple[BarFile, UpsertCounts]: ...

    def load(self, symbol: str, timeframe: str = "1d", start: datetime | str | None = None,
             end: datetime | str | None = None) -> BarArrays: ...

    def summary(self, symbols: list[str] | None = None) -> list[SymbolSummary]: ...

    def count(self, symbol: str | None = None, timeframe: str | None = None,
              start: datetime | str | None = None, end: datetime | str | None = None) -> int: ...


class ObjectStore(Protocol):
    """Artifacts (GCS in the cloud, a local folder by default). Keys are ``/``-separated."""

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str: ...

    def get_bytes(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...

    def uri(self, key: str) -> str: ...


class Clock(Protocol):
    """Time source (a fixed clock in tests)."""

    def now(self) -> datetime: ...


class JobLauncher(Protocol):
    """Starts a Cloud Run Job execution (or a local subprocess running the same entry point).

    A launcher never waits for the job to finish; the job reports through the run row.
    """

    def launch(self, kind: str, run_id: str, *, args: Sequence[str] = ()) -> str:
        """Start the ``kind`` job (``"backtest"``, ``"train"``) for ``run_id``; return the
        execution name."""
        ...


class RunRepository(Protocol):
    """Training and backtest runs (the ``runs`` table). Illegal state moves raise
    :class:`stocktrade.errors.ConflictError`; unknown ids :class:`~stocktrade.errors.NotFoundError`."""

    def create(self, kind: str, config: Mapping[str, Any], *, owner: str = "local",
               run_id: str | None = None, artifact_prefix: str | None = None,
               message: str | None = None) -> Run: ...

    def get(self, run_id: str, *, owner: str | None = None) -> Run: ...

    def resolve(self, id_or_prefix: str, *, owner: str | None = None) -> str: ...

    def list(self, *, owner: str | None = None, kind: str | None = None,
             status: str | None = None, limit: int = 50) -> builtins.list[Run]: ...

    def start(self, run_id: str, *, execution: str | None = None, restart: bool = False) -> Run: ...

    def set_execution(self, run_id: str, execution: str) -> None: ...

    def heartbeat(self, run_id: str) -> bool: ...

    def report_progress(self, run_id: str, progress: float, *, eta_seconds: float | None = None,
                        message: str | None = None) -> bool: ...

    def succeed(self, run_id: str, *, metrics: Mapping[str, Any] | None = None,
                artifacts: Mapping[str, str] | None = None, message: str | None = None,
                money: Mapping[str, Decimal] | None = None) -> Run: ...

    def fail(self, run_id: str, error: str, *, message: str | None = None) -> Run: ...

    def request_cancel(self, run_id: str, *, owner: str | None = None) -> Run: ...

    def mark_cancelled(self, run_id: str, *, message: str | None = None) -> Run: ...


# -- event delivery ---------------------------------------------------------------------------
EventHandler = Callable[["Event"], None]
"""A subscriber: called once per delivery (at least once per event); raising means "retry"."""


class EventBus(Protocol):
    """Publishes events to topics (Pub/Sub in the cloud, an in-process queue locally).

    ``ordering_key=None`` uses the event's own key (:attr:`Event.ordering_key`); ``""``
    publishes without one. ``publish`` returns once the bus has accepted the message and
    gives its message id; it raises :class:`~stocktrade.errors.TransientError` (or the
    bus's own error) when it could not.
    """

    def publish(self, topic: str, event: Event, ordering_key: str | None = None) -> str: ...

    def publish_many(
        self, items: Sequence[tuple[str, Event, str | None]]
    ) -> list[str | BaseException]:
        """Publish several events; per item, its message id or the error that stopped it."""
        ...

    def subscribe(self, topic: str, handler: EventHandler, *, name: str | None = None) -> Any: ...


class Mirror(Protocol):
    """The realtime read model for the frontend (Firestore in the cloud).

    Written only after the database transaction that caused the change has committed, and
    never read back by the system: it is a mirror, not a source of truth.

    Documents (shapes in :mod:`stocktrade.schemas.mirror`): ``agents/{agent_id}`` (live
    equity, cash, positions, last decision), ``runs/{run_id}`` (status and progress) and
    ``leaderboard/current`` (ranked rows). Each write replaces the whole document. A write
    whose ``updated_at`` is older than the stored document's is dropped, so a late write
    never regresses the view. Adapters never raise from :meth:`write` or :meth:`delete`:
    a failure is logged and swallowed (the next write repairs the document), so the mirror
    never fails a handler.
    """

    def write(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None: ...

    def delete(self, collection: str, doc_id: str) -> None: ...


class LiveBroker(Protocol):
    """A real (paper or live) broker, e.g. Alpaca paper trading.

    Unlike the simulated broker the core drives bar by bar (``services.trading.Broker``), a
    real broker is asynchronous: :meth:`submit` returns the order *accepted*, and its fills
    arrive later; the caller polls :meth:`get_order` / :meth:`get_order_by_client_id` (or
    listens to the broker's trade updates) and turns successive states into fills with
    :meth:`stocktrade.domain.broker.BrokerOrder.fill_since`.

    Errors: :class:`~stocktrade.errors.PermanentError` when the broker refuses the request
    (bad symbol, insufficient buying power: retrying cannot help),
    :class:`~stocktrade.errors.TransientError` when it could not answer (rate limit, 5xx,
    timeout) after the adapter's own bounded retries, and
    :class:`~stocktrade.errors.NotFoundError` for an unknown order.
    """

    def submit(self, request: OrderRequest) -> BrokerOrder:
        """Send an order; idempotent on ``request.client_order_id``: submitting an id the
        broker already holds returns that order (a :class:`~stocktrade.errors.ConflictError`
        if it differs from ``request``) and never opens a second one."""
        ...

    def get_order(self, broker_order_id: str) -> BrokerOrder: ...

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder: ...

    def account(self) -> BrokerAccount: ...

    def positions(self) -> builtins.list[BrokerPosition]: ...


class OutboxRecord(Protocol):
    """One stored outbox row awaiting (or done with) publication."""

    @property
    def id(self) -> int: ...

    @property
    def event_id(self) -> str: ...

    @property
    def topic(self) -> str: ...

    @property
    def ordering_key(self) -> str | None: ...

    @property
    def payload(self) -> Mapping[str, Any]: ...


class DeliveryTransaction(Protocol):
    """One open database transaction of the delivery service (see ``services.delivery``)."""

    conn: Any  # the driver connection, for the handler's own writes in the same transaction

    def claim(self, handler: str, event_id: str) -> bool:
        """Record (handler, event id) as processed; ``False`` if it already was."""
        ...

    def add_outbox(self, topic: str, event_id: str, ordering_key: str | None,
                   payload: Mapping[str, Any], attributes: Mapping[str, str]) -> bool:
        """Store an event to publish after commit; ``False`` if that event id is stored."""
        ...


class DeliveryStore(Protocol):
    """Processed-event ids, the transactional outbox and dead letters (Postgres)."""

    def transaction(self) -> AbstractContextManager[DeliveryTransaction]: ...

    def claim_pending(self, limit: int, lease_seconds: float) -> Sequence[OutboxRecord]:
        """Lease up to ``limit`` unpublished rows (oldest first) that no relay holds."""
        ...

    def mark_published(self, ids: Sequence[int]) -> None: ...

    def release(self, ids: Sequence[int], error: str | None) -> None:
        """Give leased rows back unpublished (after a failed publish)."""
        ...

    def record_dead_letter(self, handler: str, reason: str, *, event_id: str | None,
                           topic: str | None, payload: str | None) -> bool:
        """Store a message that can never be handled; ``False`` if already recorded."""
        ...

    def pending_count(self) -> int: ...

    def classify_error(self, exc: BaseException) -> Literal["transient", "permanent"] | None:
        """Whether a storage-driver error is worth retrying (``None``: not a driver error)."""
        ...
