"""Bar import throughput and range-query latency against the embedded Postgres.

Generates 1,000,000 daily bars (400 symbols x 2,500 trading days, about 10 years each) as a
CSV in the `../shared/data` format, imports it with `stocktrade data import`'s code path
(validation + COPY, parallel two-phase load) into a fresh database, and prints bars/s. It
then re-imports the same file (all rows unchanged) and times range queries for one symbol
over its whole 10 years out of the 1,000,000 stored bars, printing p50/p99 latency.

Run: .venv/bin/python bench/bench_import.py   (about 30 s)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg

from stocktrade.adapters.postgres.bars import PostgresBarRepository
from stocktrade.adapters.postgres.db import migrate
from stocktrade.adapters.postgres.embedded import ensure_server
from stocktrade.config import load_settings
from stocktrade.services.market_data import import_bar_files

SYMBOLS, DAYS = 400, 2_500


def make_file(path: Path) -> int:
    rng = np.random.default_rng(7)
    days = np.busday_offset("2006-01-02", np.arange(DAYS), roll="forward").astype(str)
    with open(path, "w") as f:
        f.write("timestamp,symbol,open,high,low,close,volume\n")
        for s in range(SYMBOLS):
            close = 50 * np.exp(np.cumsum(rng.normal(0, 0.015, DAYS)))
            open_ = close * (1 + rng.normal(0, 0.004, DAYS))
            high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, DAYS))
            low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, DAYS))
            vol = rng.integers(10_000, 5_000_000, DAYS)
            f.writelines(
                f"{d}T00:00:00Z,S{s:03d},{o:.4f},{h:.4f},{lo:.4f},{c:.4f},{v}\n"
                for d, o, h, lo, c, v in zip(days, open_, high, low, close, vol, strict=True)
            )
    return SYMBOLS * DAYS


def main() -> None:
    settings = load_settings()
    admin_url = ensure_server(settings.data_dir, "stocktrade_bench_admin")
    name = f"st_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.replace("/stocktrade_bench_admin?", f"/{name}?")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bars_1m.csv"
            n = make_file(path)
            conn = psycopg.connect(url, autocommit=True)
            migrate(conn)
            repo = PostgresBarRepository(conn)
            started = time.perf_counter()
            report = import_bar_files(repo, [path])[0]
            elapsed = time.perf_counter() - started
            assert report.counts.inserted == n, report.counts
            print(f"import  {n:,} new bars: {elapsed:.2f} s = {n / elapsed:,.0f} bars/s "
                  f"(target >= 200,000)")
            started = time.perf_counter()
            again = import_bar_files(repo, [path])[0]
            elapsed = time.perf_counter() - started
            assert again.counts.unchanged == n, again.counts
            print(f"reimport {n:,} unchanged bars: {elapsed:.2f} s = {n / elapsed:,.0f} bars/s")
            conn.execute("ANALYZE bars")
            timings = []
            for i in range(200):
                symbol = f"S{(i * 37) % SYMBOLS:03d}"
                t0 = time.perf_counter()
                bars = repo.load(symbol, "1d", "2006-01-01", "2016-12-31")
                timings.append(time.perf_counter() - t0)
                assert len(bars) == DAYS
            timings.sort()
            p50 = statistics.median(timings) * 1000
            p99 = timings[int(len(timings) * 0.99) - 1] * 1000
            print(f"range query, one symbol x 10 years ({DAYS:,} bars of {n:,} stored): "
                  f"p50 {p50:.2f} ms, p99 {p99:.2f} ms (target p50 < 50 ms)")
            conn.close()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
