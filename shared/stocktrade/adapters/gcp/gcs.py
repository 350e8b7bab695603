"""The object store on Google Cloud Storage (``gs://bucket/prefix``).

``google-cloud-storage`` is imported on first use, never at import time, and the client is
created once per store. With an emulator host (``STORAGE_EMULATOR_HOST``, e.g. the
``gcp-storage-emulator`` package) the client talks plain HTTP to it with anonymous
credentials, so tests need no account.

Keys are the same ``/``-separated relative paths as the local store and are checked the same
way (:func:`stocktrade.adapters.local.object_store.check_key`); the store's prefix is
prepended, so ``gs://bucket/env`` + ``runs/1/report.html`` is object ``env/runs/1/report.html``.
GCS writes are atomic per object by themselves.
"""

from __future__ import annotations

import builtins
import threading
from typing import Any, NoReturn
from urllib.parse import urlsplit

from stocktrade.adapters.local.object_store import check_key
from stocktrade.errors import ConfigError, NotFoundError, TransientError

__all__ = ["GcsObjectStore", "parse_gs_url"]


def parse_gs_url(url: str) -> tuple[str, str]:
    """``gs://bucket/some/prefix`` -> ``("bucket", "some/prefix/")`` (prefix may be ``""``)."""
    parts = urlsplit(url)
    if parts.scheme != "gs" or not parts.netloc:
        raise ConfigError(f"a GCS object store needs a gs://bucket[/prefix] URL, found {url!r}")
    prefix = parts.path.strip("/")
    if prefix:
        check_key(prefix)
        prefix += "/"
    return parts.netloc, prefix


class GcsObjectStore:
    """Objects in a GCS bucket under an optional prefix.

    Args:
        bucket: bucket name.
        prefix: key prefix inside the bucket (``""`` for none).
        project: Google Cloud project of the client (default: from the environment).
        emulator_host: ``host:port`` (or URL) of a storage emulator; uses anonymous
            credentials. ``None`` means real GCS with application default credentials.
        client: an existing ``google.cloud.storage.Client`` (tests, shared clients).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        project: str | None = None,
        emulator_host: str | None = None,
        client: Any = None,
    ) -> None:
        if not bucket:
            raise ConfigError("GCS object store needs a bucket name")
        prefix = prefix.strip("/")
        if prefix:
            check_key(prefix)
            prefix += "/"
        self.bucket_name = bucket
        self.prefix = prefix
        self.project = project
        self.emulator_host = emulator_host
        self._client = client
        self._bucket: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GcsObjectStore('gs://{self.bucket_name}/{self.prefix}')"

    @classmethod
    def from_url(
        cls, url: str, *, project: str | None = None, emulator_host: str | None = None
    ) -> GcsObjectStore:
        """Open the store of a ``gs://bucket[/prefix]`` URL."""
        bucket, prefix = parse_gs_url(url)
        return cls(bucket, prefix, project=project, emulator_host=emulator_host)

    # -- client ---------------------------------------------------------------------------
    def _get_bucket(self) -> Any:
        if self._bucket is None:
            with self._lock:
                if self._bucket is None:
                    if self._client is None:
                        self._client = self._make_client()
                    self._bucket = self._client.bucket(self.bucket_name)
        return self._bucket

    def _make_client(self) -> Any:
        from google.cloud import storage  # type: ignore[attr-defined]

        if self.emulator_host:
            from google.auth.credentials import AnonymousCredentials

            endpoint = self.emulator_host
            if not endpoint.startswith(("http://", "https://")):
                endpoint = "http://" + endpoint
            return storage.Client(
                project=self.project or "stocktrade-local",
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                client_options={"api_endpoint": endpoint},
            )
        return storage.Client(project=self.project)

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    # -- ObjectStore ----------------------------------------------------------------------
    def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> str:
        """Upload ``data`` at ``key``; return its ``gs://`` URI."""
        name = self._name(key)
        blob = self._get_bucket().blob(name)
        try:
            blob.upload_from_string(bytes(data), content_type=content_type)
        except Exception as exc:  # google.api_core errors: network or server trouble
            _reraise(exc, f"cannot write gs://{self.bucket_name}/{name}")
        return self.uri(key)

    def put_text(self, key: str, text: str, content_type: str = "text/plain; charset=utf-8") -> str:
        """Upload UTF-8 text at ``key``; return its URI."""
        return self.put_bytes(key, text.encode("utf-8"), content_type)

    def get_bytes(self, key: str) -> bytes:
        """The bytes at ``key``.

        Raises:
            NotFoundError: nothing is stored at ``key``.
        """
        name = self._name(key)
        try:
            return bytes(self._get_bucket().blob(name).download_as_bytes())
        except Exception as exc:
            _reraise(exc, f"no object at gs://{self.bucket_name}/{name}")

    def exists(self, key: str) -> bool:
        """True if an object is stored at ``key``."""
        name = self._name(key)
        try:
            return bool(self._get_bucket().blob(name).exists())
        except Exception as exc:
            _reraise(exc, f"cannot check gs://{self.bucket_name}/{name}")

    def delete(self, key: str) -> bool:
        """Remove the object at ``key``; True if there was one."""
        name = self._name(key)
        try:
            self._get_bucket().blob(name).delete()
        except Exception as exc:
            if isinstance(_translate(exc, ""), NotFoundError):
                return False
            _reraise(exc, f"cannot delete gs://{self.bucket_name}/{name}")
        return True

    def list(self, prefix: str = "") -> builtins.list[str]:
        """Keys starting with ``prefix`` (relative to the store's prefix), sorted."""
        check_key(prefix, allow_prefix=True)
        full = self.prefix + prefix
        try:
            blobs = self._get_bucket().list_blobs(prefix=full)
            names = [b.name for b in blobs]
        except Exception as exc:
            _reraise(exc, f"cannot list gs://{self.bucket_name}/{full}")
        return sorted(n[len(self.prefix) :] for n in names if n.startswith(full))

    def uri(self, key: str) -> str:
        """``gs://bucket/prefix/key`` (a trailing ``/`` names a folder)."""
        check_key(key, allow_prefix=key.endswith("/"))
        return f"gs://{self.bucket_name}/{self.prefix}{key}"


def _reraise(exc: Exception, what: str) -> NoReturn:
    translated = _translate(exc, what)
    if translated is exc:
        raise exc
    raise translated from exc


def _translate(exc: Exception, what: str) -> Exception:
    """google.api_core errors -> our tree: 404 NotFound, 5xx/network Transient, else as is."""
    code = getattr(exc, "code", None)
    name = type(exc).__name__
    if code == 404 or name == "NotFound":
        return NotFoundError(what)
    if (isinstance(code, int) and code >= 500) or name in (
        "ServiceUnavailable", "InternalServerError", "GatewayTimeout", "TooManyRequests",
        "ConnectionError", "Timeout", "ReadTimeout", "ConnectTimeout",
    ) or code == 429:  # fmt: skip
        return TransientError(f"{what}: {exc}")
    return exc
