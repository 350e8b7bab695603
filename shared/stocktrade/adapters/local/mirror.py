"""Local :class:`~stocktrade.ports.Mirror` adapters: off, or an in-memory dict of documents.

:class:`InMemoryMirror` follows the same rules as the Firestore mirror, so a test against it
sees what Firestore would store: values are converted by
:func:`stocktrade.schemas.mirror.mirror_value` (decimals as exact strings, aware UTC
datetimes), a write older than the stored document (by ``updated_at``) is dropped, and a
failed write is logged and swallowed, never raised.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from stocktrade.logging import get_logger
from stocktrade.schemas.mirror import UPDATED_AT, mirror_value

__all__ = ["InMemoryMirror", "NullMirror", "is_stale", "prepare_document"]

log = get_logger(__name__)


def prepare_document(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` converted to mirror values (see :func:`~stocktrade.schemas.mirror.mirror_value`).

    Raises:
        TypeError: a value no mirror can store.
    """
    doc = mirror_value(dict(data))
    assert isinstance(doc, dict)
    return doc


def is_stale(stored: Mapping[str, Any] | None, incoming: Mapping[str, Any]) -> bool:
    """True when ``stored`` is newer than ``incoming`` by their ``updated_at``.

    Documents without an ``updated_at`` datetime on either side are never stale (last write
    wins); equal times rewrite (a repeated write is harmless).
    """
    if stored is None:
        return False
    old, new = stored.get(UPDATED_AT), incoming.get(UPDATED_AT)
    return isinstance(old, datetime) and isinstance(new, datetime) and old > new


class NullMirror:
    """The mirror turned off: writes are dropped (the database stays the source of truth)."""

    def write(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        return None

    def delete(self, collection: str, doc_id: str) -> None:
        return None


class InMemoryMirror:
    """Documents kept in memory, for tests and the local stack.

    Args:
        strict: raise on a document no mirror can store instead of logging it (tests that
            want such bugs loud).

    Attributes:
        docs: ``{collection: {doc_id: data}}``; each write replaces the whole document.
        failures: how many writes failed (logged and swallowed).
        stale_drops: how many writes were dropped as older than the stored document.
    """

    def __init__(self, *, strict: bool = False) -> None:
        self.docs: dict[str, dict[str, dict[str, Any]]] = {}
        self.strict = strict
        self.failures = 0
        self.stale_drops = 0
        self._lock = threading.Lock()

    def write(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        try:
            doc = prepare_document(data)
        except TypeError as exc:
            if self.strict:
                raise
            self.failures += 1
            log.warning(
                "mirror write failed",
                extra={"collection": collection, "doc_id": doc_id, "error": str(exc)},
            )
            return
        with self._lock:
            docs = self.docs.setdefault(collection, {})
            if is_stale(docs.get(doc_id), doc):
                self.stale_drops += 1
                return
            docs[doc_id] = doc

    def delete(self, collection: str, doc_id: str) -> None:
        with self._lock:
            self.docs.get(collection, {}).pop(doc_id, None)

    def get(self, collection: str, doc_id: str) -> dict[str, Any] | None:
        """A copy of one document, or ``None``."""
        with self._lock:
            doc = self.docs.get(collection, {}).get(doc_id)
            return copy.deepcopy(doc) if doc is not None else None
