"""``stocktrade db``: the embedded Postgres and migrations."""

from __future__ import annotations

import typer

from stocktrade.cli import handle_errors
from stocktrade.cli.common import connection, console, settings

app = typer.Typer(help="Manage the database (embedded Postgres unless DATABASE_URL is set).",
                  no_args_is_help=True)


@app.command("start")
@handle_errors
def start() -> None:
    """Start (or reuse) the embedded Postgres and apply migrations."""
    conn = connection()
    version = conn.execute("SHOW server_version").fetchone()
    console.print(f"Postgres {version[0] if version else '?'} ready; schema migrated.")


@app.command("migrate")
@handle_errors
def migrate() -> None:
    """Apply pending migrations and list what was applied."""
    from stocktrade.adapters.postgres.db import connect
    from stocktrade.adapters.postgres.db import migrate as run_migrations

    conn = connect(settings(), autocommit=True, migrate_schema=False)
    applied = run_migrations(conn)
    console.print("applied: " + ", ".join(applied) if applied else "schema is up to date")


@app.command("stop")
@handle_errors
def stop() -> None:
    """Stop the embedded Postgres server (data is kept)."""
    from stocktrade.adapters.postgres.embedded import stop_server

    s = settings()
    if s.database_url:
        console.print("DATABASE_URL is set: nothing embedded to stop.")
        return
    console.print("stopped" if stop_server(s.data_dir) else "not running")


@app.command("status")
@handle_errors
def status() -> None:
    """Show where the database is and whether the embedded server runs."""
    from stocktrade.adapters.postgres.embedded import server_status

    s = settings()
    if s.database_url:
        console.print(f"external database: {s.redacted()['database_url']}")
        return
    for key, value in server_status(s.data_dir).items():
        console.print(f"{key}: {value}")


@app.command("url")
@handle_errors
def url() -> None:
    """Print the connection URL (starts the embedded server if needed)."""
    from stocktrade.adapters.postgres.db import database_url

    console.print(database_url(settings()), soft_wrap=True)
