"""Helpers shared by CLI commands: settings, connections, consoles."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    import psycopg

    from stocktrade.config import Settings

import sys

# Wide enough for the summary tables when output is piped or captured (make demo, CI logs).
console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True)


def settings() -> Settings:
    from stocktrade.config import get_settings

    return get_settings()


def connection(autocommit: bool = True) -> psycopg.Connection:
    """A connection to the migrated system of record (embedded server started if needed)."""
    from stocktrade.adapters.postgres.db import connect

    with err_console.status("starting Postgres and applying migrations..."):
        return connect(settings(), autocommit=autocommit)
