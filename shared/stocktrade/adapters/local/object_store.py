"""The object store as a local folder (the embedded default; GCS in the cloud).

Keys are ``/``-separated relative paths, the same keys :class:`~stocktrade.adapters.gcp.gcs.
GcsObjectStore` takes. A key can never leave the root: ``..`` and ``.`` segments, absolute
paths, backslashes, empty segments and control characters are rejected before any file is
touched. Writes are atomic: the bytes go to a temporary file in the target folder, are
flushed to disk, and replace the target in one ``os.replace``, so a reader sees the old
object or the new one, never half of one.
"""

from __future__ import annotations

import builtins
import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from stocktrade.errors import ConfigError, NotFoundError, ValidationError

__all__ = ["LocalObjectStore", "check_key"]

# Temporary files of in-flight writes; never listed, never a valid key segment.
_TMP_PREFIX = ".stocktrade-tmp-"
_MAX_KEY = 1024  # GCS's limit on object names (bytes of UTF-8)


def check_key(key: str, *, allow_prefix: bool = False) -> str:
    """Return ``key`` if it is a safe object key, else raise :class:`ValidationError`.

    Args:
        key: ``/``-separated relative path, e.g. ``runs/<id>/report.html``.
        allow_prefix: accept an empty key or a trailing ``/`` (a listing prefix).
    """
    if not isinstance(key, str):
        raise ValidationError(f"object key must be a string, found {type(key).__name__}")
    if key == "" and allow_prefix:
        return key
    problems = []
    if not key:
        problems.append("it is empty")
    if "\\" in key:
        problems.append("it contains a backslash")
    if key.startswith("/") or (len(key) > 1 and key[1] == ":"):
        problems.append("it is an absolute path")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        problems.append("it contains a control character")
    if len(key.encode("utf-8")) > _MAX_KEY:
        problems.append(f"it is longer than {_MAX_KEY} bytes")
    segments = key.split("/")
    if allow_prefix and key.endswith("/"):
        segments = segments[:-1]
    if any(s in ("..", ".") for s in segments):
        problems.append("it has a '.' or '..' segment")
    elif any(s == "" for s in segments) and not key.startswith("/"):
        problems.append("it has an empty segment ('//')")
    if any(s.startswith(_TMP_PREFIX) for s in segments):
        problems.append(f"a segment starts with the reserved {_TMP_PREFIX!r}")
    if problems:
        raise ValidationError(
            f"unsafe object key {key!r}: {', '.join(problems)}; expected a relative path like "
            "'runs/<run_id>/report.html'"
        )
    return key


def root_from_url(url: str) -> Path:
    """The folder of a ``file://`` URL (``file:///abs/path``)."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise ConfigError(f"a local object store needs a file:// URL, found {url!r}")
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"file:// URL must name a local path (file:///path), found {url!r}")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise ConfigError(f"file:// URL must hold an absolute path, found {url!r}")
    return Path(path)


class LocalObjectStore:
    """Objects as files under ``root``.

    Args:
        root: the folder (created on first write), or a ``file://`` URL.
    """

    def __init__(self, root: str | Path) -> None:
        if isinstance(root, str) and root.startswith("file:"):
            root = root_from_url(root)
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    @classmethod
    def from_url(cls, url: str) -> LocalObjectStore:
        """Open the store of a ``file:///path`` URL."""
        return cls(root_from_url(url))

    def path(self, key: str) -> Path:
        """The file that holds ``key`` (whether or not it exists)."""
        return self.root.joinpath(*check_key(key).split("/"))

    def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> str:
        """Write ``data`` at ``key`` atomically; return its URI. ``content_type`` is ignored
        (files have none)."""
        target = self.path(key)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValidationError(f"object data must be bytes, found {type(data).__name__}")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; objects are ordinary readable files
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.uri(key)

    def put_text(self, key: str, text: str, content_type: str = "text/plain; charset=utf-8") -> str:
        """Write UTF-8 text at ``key``; return its URI."""
        return self.put_bytes(key, text.encode("utf-8"), content_type)

    def get_bytes(self, key: str) -> bytes:
        """The bytes at ``key``.

        Raises:
            NotFoundError: nothing is stored at ``key``.
        """
        target = self.path(key)
        try:
            return target.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFoundError(f"no object at {self.uri(key)}") from None

    def exists(self, key: str) -> bool:
        """True if an object is stored at ``key``."""
        return self.path(key).is_file()

    def delete(self, key: str) -> bool:
        """Remove the object at ``key``; True if there was one."""
        target = self.path(key)
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        return True

    def list(self, prefix: str = "") -> builtins.list[str]:
        """Keys starting with ``prefix`` (a plain string prefix, as in GCS), sorted."""
        check_key(prefix, allow_prefix=True)
        folder_part = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*folder_part.split("/")) if folder_part else self.root
        if not start.is_dir():
            return []
        keys = []
        for dirpath, _dirnames, filenames in os.walk(start):
            for name in filenames:
                if name.startswith(_TMP_PREFIX):
                    continue
                rel = Path(dirpath, name).relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    keys.append(rel)
        return sorted(keys)

    def uri(self, key: str) -> str:
        """``file://`` URI of ``key`` (a trailing ``/`` names a folder)."""
        if key.endswith("/"):
            check_key(key, allow_prefix=True)
            return self.root.as_uri() + "/" + key
        return self.path(key).as_uri()
