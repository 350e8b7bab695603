"""Ports: the small protocols every outside service sits behind.

Services depend on these; adapters implement them; :mod:`stocktrade.bootstrap` picks the
adapter from settings. Handlers never know whether they got the cloud or the local one.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from stocktrade.domain.bars import SymbolSummary, Timeframe, UpsertCounts

if TYPE_CHECKING:
    from stocktrade.data.arrays import BarArrays
    from stocktrade.data.csv_bars import BarFile
    from stocktrade.domain.runs import Run


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

    def list(self, *, owner: str | None = None, kind: str | None = None,
             status: str | None = None, limit: int = 50) -> builtins.list[Run]: ...

    def start(self, run_id: str, *, execution: str | None = None, restart: bool = False) -> Run: ...

    def set_execution(self, run_id: str, execution: str) -> None: ...

    def report_progress(self, run_id: str, progress: float, *, eta_seconds: float | None = None,
                        message: str | None = None) -> bool: ...

    def succeed(self, run_id: str, *, metrics: Mapping[str, Any] | None = None,
                artifacts: Mapping[str, str] | None = None, message: str | None = None,
                money: Mapping[str, Decimal] | None = None) -> Run: ...

    def fail(self, run_id: str, error: str, *, message: str | None = None) -> Run: ...

    def request_cancel(self, run_id: str, *, owner: str | None = None) -> Run: ...

    def mark_cancelled(self, run_id: str, *, message: str | None = None) -> Run: ...
