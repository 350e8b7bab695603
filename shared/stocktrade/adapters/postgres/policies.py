"""Where a policy lives: ``model_versions`` rows and the ONNX bytes their URIs point to.

Read-only; registering and promoting versions belongs to training.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from stocktrade.errors import NotFoundError, ValidationError
from stocktrade.services.predict import PolicyModel

if TYPE_CHECKING:
    import psycopg

    from stocktrade.config import Settings
    from stocktrade.ports import ObjectStore

__all__ = ["PostgresPolicySource"]

_COLUMNS = "id::text, agent_name, version, uri_onnx, sha256"


class PostgresPolicySource:
    """Finds model versions in Postgres and reads their ONNX files.

    Args:
        connect: returns the current connection (``Container.db``).
        store: the object store, for URIs that are plain keys.
        settings: for opening ``gs://`` buckets other than the store's.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection],
        store: Callable[[], ObjectStore],
        settings: Settings | None = None,
    ) -> None:
        self._connect = connect
        self._store = store
        self._settings = settings

    def find(self, model_version: str | None, agent: str | None) -> PolicyModel:
        """The version with id ``model_version``, else the promoted version of ``agent``.

        Raises:
            NotFoundError: no such version (or the agent has none promoted).
            ValidationError: ``model_version`` is not a UUID.
        """
        import psycopg

        conn = self._connect()
        try:
            if model_version is not None:
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM model_versions WHERE id = %s::uuid", (model_version,)
                ).fetchone()
                what = f"model version {model_version}"
            else:
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM model_versions WHERE agent_name = %s "
                    "AND status = 'promoted'",
                    (agent,),
                ).fetchone()
                what = f"a promoted model version for agent {agent!r}"
        except psycopg.errors.InvalidTextRepresentation as exc:
            raise ValidationError(f"model_version must be a UUID, found {model_version!r}") from exc
        if row is None:
            raise NotFoundError(f"no {what}")
        return PolicyModel(*row)

    def read(self, uri: str) -> bytes:
        """Bytes at ``uri``: ``file://`` path, ``gs://bucket/key``, or a key of the store."""
        parts = urlsplit(uri)
        if parts.scheme == "file":
            path = Path(unquote(parts.path))
            if not path.is_file():
                raise NotFoundError(f"ONNX file not found: {uri}")
            return path.read_bytes()
        if parts.scheme == "gs":
            from stocktrade.adapters.object_store import open_object_store

            bucket = open_object_store(f"gs://{parts.netloc}", settings=self._settings)
            return bucket.get_bytes(parts.path.lstrip("/"))
        if parts.scheme:
            raise ValidationError(f"model URI must be file://, gs:// or a store key, found {uri!r}")
        return self._store().get_bytes(uri)
