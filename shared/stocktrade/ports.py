"""Ports: the small protocols every outside service sits behind.

Services depend on these; adapters implement them; :mod:`stocktrade.bootstrap` picks the
adapter from settings. Handlers never know whether they got the cloud or the local one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from stocktrade.domain.bars import SymbolSummary, Timeframe, UpsertCounts

if TYPE_CHECKING:
    from stocktrade.data.arrays import BarArrays
    from stocktrade.data.csv_bars import BarFile


class BarRepository(Protocol):
    """Stored bars (Postgres in every environment)."""

    def import_csv(
        self, data: bytes, path: str, *, source: str, timeframe: Timeframe | None = None,
        progress: Callable[[int], None] | None = None, workers: int = 2,
    ) -> tuple[BarFile, UpsertCounts]: ...

    def load(self, symbol: str, timeframe: str = "1d", start: datetime | str | None = None,
             end: datetime | str | None = None) -> BarArrays: ...

    def summary(self, symbols: list[str] | None = None) -> list[SymbolSummary]: ...


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
