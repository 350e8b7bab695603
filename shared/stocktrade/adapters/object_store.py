"""Open the object store a URL names: ``file://`` -> local folder, ``gs://`` -> GCS."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stocktrade.errors import ConfigError

if TYPE_CHECKING:
    from stocktrade.config import Settings
    from stocktrade.ports import ObjectStore

__all__ = ["open_object_store"]


def open_object_store(
    url: str | None = None,
    *,
    settings: Settings | None = None,
    project: str | None = None,
    emulator_host: str | None = None,
) -> ObjectStore:
    """The object store of ``url`` (default: the settings' ``resolved_object_store_url``).

    Args:
        url: ``file:///abs/path`` or ``gs://bucket[/prefix]``.
        settings: where the default URL, the GCP project and ``STORAGE_EMULATOR_HOST`` come from.
        project: GCP project for the GCS client (overrides settings).
        emulator_host: storage emulator ``host:port`` (overrides settings).

    Raises:
        ConfigError: the URL has another scheme.
    """
    if settings is None and url is None:
        from stocktrade.config import get_settings

        settings = get_settings()
    if settings is not None:
        url = url or settings.resolved_object_store_url
        project = project or settings.gcp_project
        emulator_host = emulator_host or settings.storage_emulator_host
    assert url is not None
    if url.startswith("file://"):
        from stocktrade.adapters.local.object_store import LocalObjectStore

        return LocalObjectStore.from_url(url)
    if url.startswith("gs://"):
        from stocktrade.adapters.gcp.gcs import GcsObjectStore

        return GcsObjectStore.from_url(url, project=project, emulator_host=emulator_host)
    raise ConfigError(f"object store URL must start with file:// or gs://, found {url!r}")
