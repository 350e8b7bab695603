"""Delivery bookkeeping in Postgres: processed-event ids, the outbox, dead letters.

Implements :class:`stocktrade.ports.DeliveryStore` for
:class:`stocktrade.services.delivery.DeliveryService`. Tables ``processed_events``,
``outbox`` and ``dead_letters`` come from migration 0001; 0004 adds outbox leases.

One store serves one process and one connection at a time: a lock serialises its
transactions, so a Cloud Function instance with request concurrency above one stays correct
(requests then wait for each other; scale out with instances, not threads).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    import psycopg

__all__ = ["OutboxRow", "PostgresDeliveryStore", "PostgresDeliveryTransaction"]


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One outbox row leased for publication."""

    id: int
    event_id: str
    topic: str
    ordering_key: str | None
    payload: Mapping[str, Any]
    attributes: Mapping[str, str] = field(default_factory=dict)
    attempts: int = 0


class PostgresDeliveryTransaction:
    """The open transaction a handler's effect runs in.

    Attributes:
        conn: the psycopg connection; the handler's own SQL runs on it, inside the transaction.
    """

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def claim(self, handler: str, event_id: str) -> bool:
        """Record (handler, event id); ``False`` if already there (a duplicate delivery).

        A concurrent delivery of the same event waits here until the first one commits or
        rolls back, so exactly one of them runs the effect.
        """
        row = self.conn.execute(
            "INSERT INTO processed_events (handler, event_id) VALUES (%s, %s) "
            "ON CONFLICT DO NOTHING RETURNING 1",
            (handler, event_id),
        ).fetchone()
        return row is not None

    def add_outbox(
        self,
        topic: str,
        event_id: str,
        ordering_key: str | None,
        payload: Mapping[str, Any],
        attributes: Mapping[str, str],
    ) -> bool:
        """Store an event to publish after commit; ``False`` if that event id is already stored."""
        row = self.conn.execute(
            "INSERT INTO outbox (event_id, topic, ordering_key, payload, attributes) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING RETURNING id",
            (event_id, topic, ordering_key, Jsonb(dict(payload)), Jsonb(dict(attributes))),
        ).fetchone()
        return row is not None


class PostgresDeliveryStore:
    """:class:`~stocktrade.ports.DeliveryStore` on one psycopg connection.

    Args:
        connect: a connection, or a callable returning the current one (e.g.
            ``Container.db``, which reconnects after a lost connection). Autocommit or not,
            each method runs in its own transaction block.
    """

    def __init__(self, connect: Callable[[], psycopg.Connection] | psycopg.Connection) -> None:
        self._connect: Callable[[], psycopg.Connection] = (
            connect if callable(connect) else (lambda: connect)  # type: ignore[assignment,return-value]
        )
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[PostgresDeliveryTransaction]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._lock:
            conn = self._connect()
            with conn.transaction():
                yield PostgresDeliveryTransaction(conn)

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection]:
        with self._lock:
            conn = self._connect()
            with conn.transaction():
                yield conn

    def claim_pending(self, limit: int, lease_seconds: float) -> list[OutboxRow]:
        """Lease up to ``limit`` unpublished rows, oldest first, that no live lease holds.

        ``SKIP LOCKED`` lets concurrent relays take disjoint rows without waiting.
        """
        with self._tx() as conn:
            rows = conn.execute(
                """
                WITH picked AS (
                    SELECT id FROM outbox
                    WHERE published_at IS NULL
                      AND (claimed_until IS NULL OR claimed_until < clock_timestamp())
                    ORDER BY id
                    LIMIT %s
                    FOR UPDATE SKIP LOCKED
                )
                UPDATE outbox o
                SET claimed_until = clock_timestamp() + make_interval(secs => %s),
                    attempts = o.attempts + 1
                FROM picked WHERE o.id = picked.id
                RETURNING o.id, o.event_id, o.topic, o.ordering_key, o.payload, o.attributes,
                          o.attempts
                """,
                (limit, lease_seconds),
            ).fetchall()
        return sorted((OutboxRow(*r) for r in rows), key=lambda r: r.id)

    def mark_published(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with self._tx() as conn:
            conn.execute(
                "UPDATE outbox SET published_at = now(), claimed_until = NULL, last_error = NULL "
                "WHERE id = ANY(%s)",
                (list(ids),),
            )

    def release(self, ids: Sequence[int], error: str | None) -> None:
        """End the lease of rows that were not published, noting why."""
        if not ids:
            return
        with self._tx() as conn:
            conn.execute(
                "UPDATE outbox SET claimed_until = NULL, last_error = %s "
                "WHERE id = ANY(%s) AND published_at IS NULL",
                (error[:2_000] if error else None, list(ids)),
            )

    def record_dead_letter(
        self,
        handler: str,
        reason: str,
        *,
        event_id: str | None,
        topic: str | None,
        payload: str | None,
    ) -> bool:
        """Store a message that can never be handled; ``False`` if (handler, event id) exists."""
        with self._tx() as conn:
            row = conn.execute(
                "INSERT INTO dead_letters (handler, event_id, topic, payload, reason) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (handler, event_id) DO NOTHING "
                "RETURNING id",
                (handler, event_id, topic, payload, reason[:10_000]),
            ).fetchone()
        return row is not None

    def pending_count(self) -> int:
        """Outbox rows not yet published (leased or not)."""
        with self._tx() as conn:
            row = conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()
        return int(row[0]) if row else 0

    def dead_letters(self, handler: str | None = None) -> list[dict[str, Any]]:
        """Dead letters, oldest first (optionally of one handler), as dicts."""
        with self._tx() as conn:
            cur = conn.execute(
                "SELECT id, handler, event_id, topic, payload, reason, created_at FROM dead_letters "
                "WHERE %(h)s::text IS NULL OR handler = %(h)s ORDER BY id",
                {"h": handler},
            )
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def is_processed(self, handler: str, event_id: str) -> bool:
        """Whether ``handler`` has handled ``event_id``."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT 1 FROM processed_events WHERE handler = %s AND event_id = %s",
                (handler, event_id),
            ).fetchone()
        return row is not None

    @staticmethod
    def classify_error(exc: BaseException) -> Literal["transient", "permanent"] | None:
        """Whether a driver error is worth retrying.

        Permanent: the data itself is wrong (bad value, failed CHECK or NOT NULL), so a retry
        fails the same way. Transient: connection loss, serialisation failures, deadlocks, and
        foreign-key or unique races (the referenced row may arrive later). ``None``: not a
        database error.
        """
        import psycopg
        from psycopg import errors

        if isinstance(exc, errors.CheckViolation | errors.NotNullViolation | psycopg.DataError):
            return "permanent"
        if isinstance(
            exc, psycopg.OperationalError | psycopg.IntegrityError | psycopg.InterfaceError
        ):
            return "transient"
        if isinstance(exc, psycopg.Error) and getattr(exc, "sqlstate", None) in ("40001", "40P01"):
            return "transient"
        return None
