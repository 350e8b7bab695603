"""The command line against a real database, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer.main

from tests.conftest import data_file

pytestmark = pytest.mark.integration


def run_cli(*args: str, database_url: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKTRADE_")}
    env.update({"DATABASE_URL": database_url, "STOCKTRADE_ENV": "test"})
    return subprocess.run([sys.executable, "-m", "stocktrade.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def all_commands() -> list[list[str]]:
    from stocktrade.cli import _register, app

    _register()
    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(cmd: object, prefix: list[str]) -> None:
        paths.append(prefix)
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, [*prefix, name])

    walk(root, [])
    return paths


def test_every_command_has_help() -> None:
    from typer.testing import CliRunner

    from stocktrade.cli import app

    commands = all_commands()
    assert ["data", "import"] in commands and ["db", "status"] in commands
    for path in commands:
        result = CliRunner().invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output


def test_import_then_summary_and_query(pg_url: str, db_conn: object) -> None:
    path = data_file("daily_indices_arch.csv")
    imported = run_cli("data", "import", str(path), database_url=pg_url)
    assert imported.returncode == 0, imported.stderr
    assert "8,554" in imported.stdout
    summary = run_cli("data", "summary", database_url=pg_url)
    assert "^GSPC" in summary.stdout and "4,277" in summary.stdout
    query = run_cli("data", "query", "^IXIC", "--from", "2015-12-01", "--to", "2015-12-31", "--csv",
                    database_url=pg_url)
    lines = query.stdout.strip().splitlines()
    assert lines[0] == "timestamp,Open,High,Low,Close,Volume"
    assert len(lines) == 1 + 22  # trading days in December 2015


def test_missing_file_is_a_clear_error(pg_url: str) -> None:
    result = run_cli("data", "import", "/nonexistent/bars.csv", database_url=pg_url)
    assert result.returncode == 2
    assert "no such file or folder" in result.stderr
