"""The one composition root: settings in, wired adapters and services out.

Entry points (CLI, functions, jobs) call :func:`bootstrap`; tests pass fakes instead
(``bootstrap(settings, bus=InProcessBus(), store=LocalObjectStore(tmp))``). Nothing here
connects or loads anything until first use, so cold starts stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stocktrade.config import Settings, get_settings

if TYPE_CHECKING:
    import psycopg

    from stocktrade.adapters.postgres.bars import PostgresBarRepository


@dataclass
class Container:
    """Lazily created adapters for one process (one Cloud Function instance, one job)."""

    settings: Settings
    overrides: dict[str, Any] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict)

    def _get(self, name: str, factory: Any) -> Any:
        if name in self.overrides:
            return self.overrides[name]
        if name not in self._cache:
            self._cache[name] = factory()
        return self._cache[name]

    def db(self) -> psycopg.Connection:
        """A migrated autocommit connection, created once per process and reconnected if closed."""
        from stocktrade.adapters.postgres.db import connect

        conn = self._get("db", lambda: connect(self.settings, autocommit=True))
        if conn.closed and "db" not in self.overrides:
            conn = self._cache["db"] = connect(self.settings, autocommit=True)
        return conn  # type: ignore[no-any-return]

    def bars(self) -> PostgresBarRepository:
        from stocktrade.adapters.postgres.bars import PostgresBarRepository

        return PostgresBarRepository(self.db())

    def close(self) -> None:
        conn = self._cache.pop("db", None)
        if conn is not None:
            conn.close()


def bootstrap(settings: Settings | None = None, **overrides: Any) -> Container:
    """Wire adapters from settings; keyword arguments replace individual adapters."""
    return Container(settings or get_settings(), overrides)
