"""The system of record against a real (embedded) Postgres."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
import pytest

from stocktrade.adapters.postgres.bars import PostgresBarRepository, recover_prepared_imports
from stocktrade.adapters.postgres.db import load_migrations, migrate
from stocktrade.errors import NotFoundError, ValidationError
from stocktrade.services.market_data import import_bar_files
from tests.conftest import _with_database, data_file

pytestmark = pytest.mark.integration

TABLES = {"bars", "users", "agents", "runs", "model_versions", "signals", "decisions", "orders",
          "fills", "positions", "cash_ledger", "equity_snapshots", "news", "processed_events",
          "outbox", "dead_letters", "leaderboard"}


def table_fingerprint(conn: psycopg.Connection) -> tuple:
    return conn.execute(
        "SELECT count(*), md5(string_agg(symbol || timeframe || ts::text || open::text || high::text"
        " || low::text || close::text || volume::text, ',' ORDER BY symbol, timeframe, ts)) FROM bars"
    ).fetchone()


def test_migrations_create_the_whole_schema_from_empty(pg_admin_url: str) -> None:
    name = "st_migrate_probe"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(pg_admin_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            applied = migrate(conn)
            assert applied == [m.name for m in load_migrations()]
            assert migrate(conn) == []  # idempotent
            tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
            assert tables >= TABLES
            kinds = dict(conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name='bars'"
            ).fetchall())
            assert kinds["open"] == "numeric" and kinds["ts"] == "timestamp with time zone"
            indexes = {r[0]: r[1] for r in conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename='bars'")}
            assert any("ts DESC" in d for d in indexes.values())
            assert any("PRIMARY KEY" in d or "pkey" in n for n, d in indexes.items())
            embedding = conn.execute(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'news'::regclass AND attname = 'embedding'").fetchone()
            assert embedding[0] == "vector(384)"
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_importing_stocknet_twice_leaves_exactly_its_rows(db_conn: psycopg.Connection) -> None:
    path = data_file("daily_us_stocks_stocknet.csv")
    repo = PostgresBarRepository(db_conn)
    first = import_bar_files(repo, [path])[0]
    assert first.counts.inserted == 49_582
    before = table_fingerprint(db_conn)
    second = import_bar_files(repo, [path])[0]
    assert (second.counts.inserted, second.counts.updated, second.counts.unchanged) == (0, 0, 49_582)
    assert table_fingerprint(db_conn) == before
    assert repo.count() == 49_582


def test_prices_are_stored_exactly_as_published(db_conn: psycopg.Connection) -> None:
    repo = PostgresBarRepository(db_conn)
    import_bar_files(repo, [data_file("daily_us_stocks_stocknet.csv")])
    row = db_conn.execute(
        "SELECT open::text, adj_close::text FROM bars WHERE symbol='AAPL' AND ts='2012-09-04T00:00:00Z'"
    ).fetchone()
    assert row == ("95.10857400", "87.12114000")


def test_a_corrupted_row_rejects_the_file_and_changes_nothing(db_conn: psycopg.Connection, tmp_path: Path) -> None:
    path = data_file("daily_us_stocks_stocknet.csv")
    repo = PostgresBarRepository(db_conn)
    import_bar_files(repo, [path])
    before = table_fingerprint(db_conn)
    lines = path.read_bytes().split(b"\n")
    lines[1234] = lines[1234].replace(b",", b",x", 3).replace(b"2012", b"2031")  # new key, bad value
    lines[10] = lines[10].replace(b"AAPL", b"ZZZZ")  # a valid new row that must not be written
    bad = tmp_path / "corrupted.csv"
    bad.write_bytes(b"\n".join(lines))
    with pytest.raises(ValidationError, match=r"corrupted.csv:1235:"):
        import_bar_files(repo, [bad])
    assert table_fingerprint(db_conn) == before


def test_cli_import_of_a_corrupted_file_exits_non_zero_and_names_the_line(
    pg_url: str, tmp_path: Path, db_conn: psycopg.Connection
) -> None:
    lines = data_file("daily_us_stocks_stocknet.csv").read_bytes().split(b"\n")
    fields = lines[500].split(b",")
    fields[3], fields[4] = fields[4], fields[3]  # high < low
    lines[500] = b",".join(fields)
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\n".join(lines))
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": pg_url, "STOCKTRADE_ENV": "test"}
    result = subprocess.run([sys.executable, "-m", "stocktrade.cli", "data", "import", str(bad)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert "bad.csv:501:" in result.stderr and "OHLC inconsistent" in result.stderr
    assert db_conn.execute("SELECT count(*) FROM bars").fetchone()[0] == 0


def test_a_changed_bar_is_updated_and_counted(db_conn: psycopg.Connection, tmp_path: Path) -> None:
    repo = PostgresBarRepository(db_conn)
    header = b"timestamp,symbol,open,high,low,close,volume\n"
    a = tmp_path / "a.csv"
    a.write_bytes(header + b"2015-01-02T00:00:00Z,AAA,10,11,9,10.5,1000\n2015-01-05T00:00:00Z,AAA,10,11,9,10.5,1000\n")
    b = tmp_path / "b.csv"
    b.write_bytes(header + b"2015-01-02T00:00:00Z,AAA,10,11,9,10.6,1000\n2015-01-06T00:00:00Z,AAA,10,11,9,10.5,1000\n")
    import_bar_files(repo, [a])
    report = import_bar_files(repo, [b])[0]
    assert (report.counts.inserted, report.counts.updated, report.counts.unchanged) == (1, 1, 0)
    assert repo.load("AAA").close.tolist() == [10.6, 10.5, 10.5]


def test_range_query_returns_sorted_arrays_and_a_frame(db_conn: psycopg.Connection) -> None:
    repo = PostgresBarRepository(db_conn)
    import_bar_files(repo, [data_file("daily_us_stocks_stocknet.csv")])
    bars = repo.load("MSFT", "1d", datetime(2014, 1, 1, tzinfo=UTC), datetime(2014, 12, 31, tzinfo=UTC))
    assert len(bars) == 252
    assert bars.ts[0] == np.datetime64("2014-01-02T00:00:00", "ns")
    assert bool(np.all(np.diff(bars.ts.astype("int64")) > 0))
    frame = repo.load_frame("MSFT", "1d", "2014-01-01", "2014-01-31")
    assert list(frame.columns) == ["Open", "High", "Low", "Close", "Volume"]
    assert str(frame.index.tz) == "UTC" and len(frame) == 21  # trading days in Jan 2014


def test_unknown_symbol_and_empty_range_are_clear_errors(db_conn: psycopg.Connection) -> None:
    repo = PostgresBarRepository(db_conn)
    import_bar_files(repo, [data_file("daily_indices_arch.csv")])
    with pytest.raises(NotFoundError, match="NOPE"):
        repo.load("NOPE")
    with pytest.raises(ValidationError, match="no 1d bars for \\^GSPC"):
        repo.require("^GSPC", "1d", "1990-01-01", "1990-12-31")


def test_parallel_import_is_atomic_and_leaves_no_prepared_transactions(
    db_conn: psycopg.Connection, tmp_path: Path
) -> None:
    rows = [b"timestamp,symbol,open,high,low,close,volume\n"]
    day = np.datetime64("1990-01-01")
    for s in range(30):
        for d in range(2000):
            rows.append(f"{day + d}T00:00:00Z,P{s:02d},10,11,9,10,{d}\n".encode())
    big = tmp_path / "big.csv"
    big.write_bytes(b"".join(rows))
    repo = PostgresBarRepository(db_conn)
    report = import_bar_files(repo, [big])[0]
    assert report.counts.inserted == 60_000
    assert repo.count() == 60_000
    assert db_conn.execute("SELECT count(*) FROM pg_prepared_xacts").fetchone()[0] == 0
    assert recover_prepared_imports(db_conn) == {}


def test_interrupted_two_phase_import_is_recovered(pg_url: str, db_conn: psycopg.Connection) -> None:
    # Simulate a crash after part 0 committed and part 1 was only prepared.
    with psycopg.connect(pg_url) as c:
        c.execute("INSERT INTO bars (symbol,timeframe,ts,open,high,low,close,volume) "
                  "VALUES ('R','1d','2000-01-03',1,1,1,1,1)")
        c.execute("PREPARE TRANSACTION 'stocktrade-import-abc-1'")
    assert recover_prepared_imports(db_conn) == {"stocktrade-import-abc": "committed"}
    assert db_conn.execute("SELECT count(*) FROM bars WHERE symbol='R'").fetchone()[0] == 1
    # And a group whose first part is still prepared was never committed: roll it back.
    with psycopg.connect(pg_url) as c:
        c.execute("INSERT INTO bars (symbol,timeframe,ts,open,high,low,close,volume) "
                  "VALUES ('Q','1d','2000-01-03',1,1,1,1,1)")
        c.execute("PREPARE TRANSACTION 'stocktrade-import-def-0'")
    assert recover_prepared_imports(db_conn) == {"stocktrade-import-def": "rolled back"}
    assert db_conn.execute("SELECT count(*) FROM bars WHERE symbol='Q'").fetchone()[0] == 0


def test_two_commands_started_at_once_share_one_server(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from stocktrade.adapters.postgres.embedded import ensure_server;"
            "print(ensure_server(Path(sys.argv[1]), 'x'))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    try:
        assert all(p.returncode == 0 for p in procs), outs
        urls = {o[0].strip() for o in outs}
        assert len(urls) == 1
        pid_lines = (tmp_path / "pgdata" / "postmaster.pid").read_text().splitlines()
        assert int(pid_lines[0]) > 0
    finally:
        from stocktrade.adapters.postgres.embedded import stop_server

        stop_server(tmp_path)
