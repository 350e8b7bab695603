"""Firestore as the :class:`~stocktrade.ports.Mirror`: the frontend's realtime read model.

* Written after commits, never read back by the system (Postgres is the source of truth);
  document shapes are in :mod:`stocktrade.schemas.mirror`.
* Never fails a handler: every error (network, permissions, quota, a value Firestore cannot
  store) is logged with its reason and swallowed; the next write of the document repairs it.
  Each call is bounded: per-attempt ``timeout`` and a retry budget of the same length, so an
  unreachable Firestore costs a handler about ``2 * timeout`` seconds, not minutes.
* Never regresses a document: a write whose ``updated_at`` is older than the stored one is
  dropped. The check is a read then a write (one extra read per write); two writers racing
  on one document can still interleave, which per-agent ordering keys make rare and the
  next write repairs.
* The client is created on first use (``google.cloud.firestore`` costs ~0.3 s to import,
  which a cold start should not pay unless it writes). It honours
  ``FIRESTORE_EMULATOR_HOST``; ``emulator_host=`` points one mirror at an emulator without
  the environment variable.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stocktrade.adapters.local.mirror import is_stale, prepare_document
from stocktrade.logging import get_logger

if TYPE_CHECKING:
    from stocktrade.config import Settings

__all__ = ["FirestoreMirror"]

log = get_logger(__name__)


class FirestoreMirror:
    """Whole-document writes to Firestore (or its emulator).

    Args:
        project: Google Cloud project id; ``None`` lets the client find it (with the
            emulator: ``GOOGLE_CLOUD_PROJECT`` or a placeholder).
        database: Firestore database id (``None``: ``(default)``).
        emulator_host: ``host:port`` of a Firestore emulator (else the client reads
            ``FIRESTORE_EMULATOR_HOST``).
        timeout: seconds per RPC attempt, and the retry budget of one call.
        client: a ready ``google.cloud.firestore.Client`` (tests).
        check_stale: drop writes older than the stored document (one read per write).
    """

    def __init__(
        self,
        project: str | None = None,
        *,
        database: str | None = None,
        emulator_host: str | None = None,
        timeout: float = 5.0,
        client: Any = None,
        check_stale: bool = True,
    ) -> None:
        self.project = project
        self.database = database
        self.emulator_host = emulator_host
        self.timeout = timeout
        self.check_stale = check_stale
        self.failures = 0
        self.stale_drops = 0
        self._client = client
        self._retry: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> FirestoreMirror:
        """The mirror of ``settings`` (project from ``GOOGLE_CLOUD_PROJECT``)."""
        kwargs.setdefault("emulator_host", settings.firestore_emulator_host)
        return cls(settings.gcp_project, **kwargs)

    def __repr__(self) -> str:
        target = self.emulator_host or "firestore"
        return f"FirestoreMirror(project={self.project!r}, target={target!r})"

    # -- client ---------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The ``firestore.Client``, created on first use."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        from google.cloud import firestore

        if not self.emulator_host:
            return firestore.Client(project=self.project, database=self.database)
        from google.auth.credentials import AnonymousCredentials

        client = firestore.Client(
            project=self.project or "local-project",
            database=self.database,
            credentials=AnonymousCredentials(),
        )
        # What the client sets from FIRESTORE_EMULATOR_HOST (an insecure channel and the
        # emulator's auth header); set before the first call, when the channel is created.
        client._emulator_host = self.emulator_host
        return client

    @property
    def retry(self) -> Any:
        """Retry transient errors (unavailable, deadline) within one ``timeout`` budget."""
        if self._retry is None:
            from google.api_core.retry import Retry, if_transient_error

            self._retry = Retry(
                predicate=if_transient_error,
                initial=0.1,
                maximum=1.0,
                multiplier=2.0,
                timeout=self.timeout,
            )
        return self._retry

    # -- the port -------------------------------------------------------------------------
    def write(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        """Replace ``collection/doc_id`` with ``data``; failures are logged, never raised."""
        try:
            doc = prepare_document(data)
            ref = self.client.collection(collection).document(doc_id)
            if self.check_stale:
                snapshot = ref.get(retry=self.retry, timeout=self.timeout)
                if snapshot.exists and is_stale(snapshot.to_dict(), doc):
                    self.stale_drops += 1
                    log.info(
                        "mirror write older than the stored document; dropped",
                        extra={"collection": collection, "doc_id": doc_id},
                    )
                    return
            ref.set(doc, retry=self.retry, timeout=self.timeout)
        except Exception as exc:  # the mirror is never the source of truth: log, go on
            self._failed("write", collection, doc_id, exc)

    def delete(self, collection: str, doc_id: str) -> None:
        """Delete ``collection/doc_id`` (absent is fine); failures are logged, never raised."""
        try:
            ref = self.client.collection(collection).document(doc_id)
            ref.delete(retry=self.retry, timeout=self.timeout)
        except Exception as exc:  # see write()
            self._failed("delete", collection, doc_id, exc)

    def close(self) -> None:
        """Close the client's channel (a later write opens a new client)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # closing is best effort
                log.debug("firestore client close failed", extra={"error": str(exc)})

    def _failed(self, op: str, collection: str, doc_id: str, exc: BaseException) -> None:
        self.failures += 1
        log.warning(
            f"mirror {op} failed; the next write repairs it",
            extra={
                "collection": collection,
                "doc_id": doc_id,
                "error_type": type(exc).__name__,
                "error": str(exc)[:500],
            },
        )
