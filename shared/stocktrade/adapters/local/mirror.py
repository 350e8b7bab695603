"""Local :class:`~stocktrade.ports.Mirror` adapters: off, or an in-memory dict of documents."""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["InMemoryMirror", "NullMirror"]


class NullMirror:
    """The mirror turned off: writes are dropped (the database stays the source of truth)."""

    def write(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        return None

    def delete(self, collection: str, doc_id: str) -> None:
        return None


class InMemoryMirror:
    """Documents kept in memory, for tests and the local stack.

    Attributes:
        docs: ``{collection: {doc_id: data}}``; each write replaces the whole document.
    """

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def write(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        with self._lock:
            self.docs.setdefault(collection, {})[doc_id] = copy.deepcopy(dict(data))

    def delete(self, collection: str, doc_id: str) -> None:
        with self._lock:
            self.docs.get(collection, {}).pop(doc_id, None)

    def get(self, collection: str, doc_id: str) -> dict[str, Any] | None:
        """A copy of one document, or ``None``."""
        with self._lock:
            doc = self.docs.get(collection, {}).get(doc_id)
            return copy.deepcopy(doc) if doc is not None else None
