"""Shared fixtures: settings isolated from the developer's environment, a real Postgres.

Database tests run against the embedded Postgres (or ``STOCKTRADE_TEST_DATABASE_URL``,
an admin URL of another server). Each test session creates its own database, migrated
from empty, and drops it at the end. If no server can be started the tests skip with the
reason instead of passing silently.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO.parent / "shared" / "data").resolve()

# Tests never read the developer's .env or real settings.
for key in list(os.environ):
    if key.startswith("STOCKTRADE_") and key not in ("STOCKTRADE_TEST_DATABASE_URL", "STOCKTRADE_DATA_DIR"):
        del os.environ[key]
os.environ["STOCKTRADE_ENV"] = "test"


def data_file(name: str) -> Path:
    """A file of ../shared/data, or skip the test with the reason."""
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real data file {path} is not present")
    return path


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """Admin URL of a running Postgres (embedded unless STOCKTRADE_TEST_DATABASE_URL)."""
    explicit = os.environ.get("STOCKTRADE_TEST_DATABASE_URL")
    if explicit:
        return explicit
    try:
        from stocktrade.adapters.postgres.embedded import ensure_server
        from stocktrade.config import load_settings

        settings = load_settings()
        return ensure_server(settings.data_dir, "stocktrade_tests_admin")
    except Exception as exc:  # any failure to start is a reason to skip, stated
        pytest.skip(f"cannot start the embedded Postgres: {exc}")


@pytest.fixture(scope="session")
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """URL of a fresh database for this test session, migrated from empty."""
    import psycopg

    from stocktrade.adapters.postgres.db import migrate

    name = f"st_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(pg_admin_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
    yield url
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


_KEEP = {"schema_migrations", "users"}


@pytest.fixture
def db_conn(pg_url: str) -> Iterator[object]:
    """An autocommit connection to the session database, emptied after the test."""
    import psycopg

    conn = psycopg.connect(pg_url, autocommit=True)
    yield conn
    tables = [r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    ) if r[0] not in _KEEP]
    if tables:
        conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
    conn.execute("DELETE FROM users WHERE id <> 'local'")
    conn.close()
