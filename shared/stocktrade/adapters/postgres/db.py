"""Connections and migrations for the Postgres system of record.

``DATABASE_URL`` points at any Postgres (Cloud SQL in production); unset, the embedded
server is started on demand. Migrations are the numbered ``migrations/NNNN_name.sql``
files, applied in order, each in its own transaction, under an advisory lock so that two
processes migrating at once apply each file exactly once. An applied file whose content
changed afterwards is refused (edit history by adding a migration, never by rewriting one).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from stocktrade.config import Settings, get_settings
from stocktrade.errors import ConfigError, TransientError
from stocktrade.logging import get_logger

if TYPE_CHECKING:
    import psycopg

log = get_logger(__name__)

_MIGRATION_LOCK_KEY = 7_240_331_901  # arbitrary, stable advisory-lock key
_migrated: set[str] = set()
_lock = threading.Lock()


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """The packaged migrations, sorted by version; duplicate numbers are an error."""
    folder = resources.files("stocktrade.adapters.postgres") / "migrations"
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        number, _, _rest = entry.name.partition("_")
        if not number.isdigit():
            raise ConfigError(f"migration file {entry.name!r} must start with a number")
        version = int(number)
        if version in found:
            raise ConfigError(f"two migrations share number {version}: {found[version].name}, {entry.name}")
        found[version] = Migration(version, entry.name, entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date)."""
    applied_now: list[str] = []
    previous_autocommit = conn.autocommit
    conn.autocommit = True
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {
                row[0]: (row[1], row[2])
                for row in conn.execute("SELECT version, name, checksum FROM schema_migrations")
            }
            for migration in load_migrations():
                if migration.version in done:
                    _name, checksum = done[migration.version]
                    if checksum != migration.checksum:
                        raise ConfigError(
                            f"migration {migration.name} changed after it was applied "
                            f"(recorded sha256 {checksum[:12]}, file {migration.checksum[:12]}); "
                            "add a new migration instead of editing an applied one"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.sql)  # type: ignore[arg-type]
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                applied_now.append(migration.name)
                log.info("applied migration", extra={"migration": migration.name})
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_KEY,))
    finally:
        conn.autocommit = previous_autocommit
    return applied_now


def database_url(settings: Settings | None = None) -> str:
    """The URL to connect to: ``DATABASE_URL`` or the embedded server (started if needed)."""
    settings = settings or get_settings()
    if settings.database_url:
        return settings.database_url
    from stocktrade.adapters.postgres.embedded import ensure_server

    return ensure_server(settings.data_dir, settings.embedded_db_name)


def connect(
    settings: Settings | None = None, *, url: str | None = None, autocommit: bool = False,
    migrate_schema: bool = True,
) -> psycopg.Connection:
    """Open a connection to a migrated database.

    Args:
        settings: where to connect; defaults to the process settings.
        url: an explicit URL, overriding settings.
        autocommit: psycopg autocommit mode.
        migrate_schema: apply pending migrations once per process and URL.

    Raises:
        TransientError: the database cannot be reached.
    """
    import psycopg

    target = url or database_url(settings)
    try:
        conn = psycopg.connect(target, autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise TransientError(f"cannot connect to Postgres: {exc}") from exc
    if migrate_schema and target not in _migrated:
        with _lock:
            if target not in _migrated:
                migrate(conn)
                _migrated.add(target)
    return conn
