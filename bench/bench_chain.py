"""Live chain benchmarks: bar -> fill latency, and a burst of 5,000 symbols' bars.

Run: ``.venv/bin/python bench/bench_chain.py [--symbols 5000] [--latency-bars 400]``

1. **bar -> fill latency, in process**: real AAPL daily bars replayed one by one through
   the in-process bus and the per-event delivery service (one transaction per handler,
   outbox relay after each), an SMA(2, 3) agent that trades often. Latency = from publishing
   bar t to the moment its open fill has been applied by ``on_fill`` (positions, cash
   ledger, leaderboard). p50 / p99 over the bars that filled an order.
2. **burst**: ``--symbols`` synthetic symbols (random walks), one SMA(2, 3) agent each,
   one bar per symbol at the same timestamp, through the bulk worker (one transaction for
   the bars, then the outbox drained in batches: signals, orders, fills). Every agent holds
   warmed-up state and about a third have an order to fill at the burst's open. Printed:
   the first burst of a fresh process (strategies built from stored state) and warm bursts
   (cached strategies), target <= 5 s.
3. **bar -> fill latency via the Pub/Sub emulator** (``--emulator``, when gcloud is there):
   the faithful local stack of tests/emulators.py: four functions-framework servers
   (on_bar, on_signal, on_order, on_fill), push subscriptions, the relay publishing to the
   emulator. Latency = from publishing bar t to ``on_fill`` having applied its open fill
   (seen by polling ``positions`` every 2 ms).

Each run creates and drops its own database on the embedded Postgres.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import psycopg

from stocktrade.adapters.local.bus import InProcessEventBus
from stocktrade.adapters.market.replay import bars_from_csv
from stocktrade.adapters.postgres.agents import PostgresAgentStore
from stocktrade.adapters.postgres.chain import PostgresBulkDelivery, PostgresChainStore
from stocktrade.adapters.postgres.db import migrate
from stocktrade.adapters.postgres.delivery import PostgresDeliveryStore
from stocktrade.adapters.postgres.embedded import ensure_server
from stocktrade.config import load_settings
from stocktrade.domain.bars import Bar, Timeframe
from stocktrade.schemas.events import Bar as BarEvent
from stocktrade.services import chain
from stocktrade.services.agents import AgentSpec, PolicyRuntimes, create_agent
from stocktrade.services.chain_engine import ChainEngine
from stocktrade.services.chain_worker import BulkChainWorker
from stocktrade.services.delivery import DeliveryService

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COSTS = {"commission_bps": "5", "slippage_bps": "2"}
T0 = datetime(2020, 1, 2, tzinfo=UTC)


def fresh_db() -> tuple[str, str, str]:
    settings = load_settings()
    admin_url = ensure_server(settings.data_dir, "stocktrade_bench_admin")
    name = f"st_bench_chain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.replace("/stocktrade_bench_admin?", f"/{name}?")
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
    return admin_url, url, name


def drop_db(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# -- 1. latency ---------------------------------------------------------------------------------
def bench_latency(url: str, n_bars: int) -> None:
    conn = psycopg.connect(url, autocommit=True)
    bars = bars_from_csv(DATA / "daily_us_stocks_stocknet.csv", ["AAPL"], source="stocknet")
    bars = bars[:n_bars]
    with conn.transaction():
        PostgresChainStore(conn).upsert_bars(bars)
    spec = AgentSpec(
        name="latency",
        strategy="sma_crossover",
        params={"fast": 2, "slow": 3},
        symbols=("AAPL",),
        costs=COSTS,
    )
    create_agent(PostgresAgentStore(conn), spec)
    bus = InProcessEventBus(record=False)
    deps = SimpleNamespace(chain_engine=ChainEngine(PolicyRuntimes(chain.model_reader())))
    delivery = DeliveryService(PostgresDeliveryStore(conn), bus, deps=deps)
    chain.subscribe(bus, delivery)
    filled_at: list[float] = []
    bus.subscribe("fills", lambda _e: filled_at.append(time.perf_counter()), name="probe")
    latencies, cascades = [], []
    for bar in bars:
        before = len(filled_at)
        started = time.perf_counter()
        bus.publish("market-bars", BarEvent.from_domain(bar))
        cascades.append(time.perf_counter() - started)
        if len(filled_at) > before:
            latencies.append(filled_at[before] - started)
    ms = [x * 1e3 for x in latencies]
    print(
        f"bar->fill latency, in-process bus + per-event delivery (Postgres commits): "
        f"p50 {pct(ms, 50):.2f} ms, p99 {pct(ms, 99):.2f} ms over {len(ms)} fills "
        f"({len(bars)} bars; whole bar cascade p50 {pct(cascades, 50) * 1e3:.2f} ms)"
    )
    conn.close()


# -- 2. burst -----------------------------------------------------------------------------------
def make_agents(conn: psycopg.Connection, n: int) -> None:
    """n agents, S0000.., one book each (bulk insert: what create_agent writes, per agent)."""
    from psycopg.types.json import Jsonb

    from stocktrade.domain.costs import CostModel

    cash = Decimal("100000")
    costs = Jsonb(CostModel.from_dict(COSTS).to_dict())
    with conn.transaction(), conn.cursor() as cur:
        ids = [uuid.uuid4() for _ in range(n)]
        syms = [f"S{i:04d}" for i in range(n)]
        cur.executemany(
            "INSERT INTO agents (id, owner, name, kind, strategy, params, symbols, risk, costs, "
            "initial_cash) VALUES (%s, 'local', %s, 'baseline', 'sma_crossover', %s, %s, '{}', "
            "%s, %s)",
            [
                (i, f"burst-{s}", Jsonb({"fast": 2, "slow": 3}), [s], costs, cash)
                for i, s in zip(ids, syms, strict=True)
            ],
        )
        cur.executemany(
            "INSERT INTO chain_books (agent_id, symbol, timeframe, initial_cash, cash) "
            "VALUES (%s, %s, '1d', %s, %s)",
            [(i, s, cash, cash) for i, s in zip(ids, syms, strict=True)],
        )
        cur.executemany(
            "INSERT INTO positions (agent_id, symbol) VALUES (%s, %s)",
            list(zip(ids, syms, strict=True)),
        )
        cur.executemany(
            "INSERT INTO cash_ledger (agent_id, ts, amount, balance, kind, ref) "
            "VALUES (%s, now(), %s, %s, 'deposit', 'initial')",
            [(i, cash, cash) for i in ids],
        )
        cur.executemany(
            "INSERT INTO leaderboard (agent_id, trades, equity) VALUES (%s, 0, %s)",
            [(i, cash) for i in ids],
        )


def burst_bars(n: int, day: int, prices: np.ndarray, rng: np.random.Generator) -> list[BarEvent]:
    prices *= np.exp(rng.normal(0, 0.02, n))
    out = []
    ts = T0 + timedelta(days=day)
    for i in range(n):
        c = Decimal(f"{prices[i]:.4f}")
        o = Decimal(f"{prices[i] * (1 + rng.normal(0, 0.003)):.4f}")
        hi = max(o, c) * Decimal("1.004")
        lo = min(o, c) * Decimal("0.996")
        out.append(
            BarEvent.from_domain(
                Bar(
                    f"S{i:04d}",
                    Timeframe.D1,
                    ts,
                    o,
                    hi.quantize(Decimal("0.0001")),
                    lo.quantize(Decimal("0.0001")),
                    c,
                    Decimal(100_000),
                    "bench",
                )
            )
        )
    return out


def bench_burst(url: str, n: int, warm_days: int = 5) -> None:
    conn = psycopg.connect(url, autocommit=True)
    t = time.perf_counter()
    make_agents(conn, n)
    setup = time.perf_counter() - t
    rng = np.random.default_rng(7)
    prices = rng.uniform(20, 200, n)

    def worker(engine: ChainEngine) -> BulkChainWorker:
        deps = SimpleNamespace(chain_engine=engine)
        delivery = DeliveryService(
            PostgresDeliveryStore(conn), InProcessEventBus(), deps=deps, relay_after_handle=False
        )

        def fallback(handler: str, event: object) -> None:
            h = chain.HANDLERS[handler]
            delivery.handle(handler, event, h.effect)  # type: ignore[arg-type]

        return BulkChainWorker(
            PostgresBulkDelivery(conn), PostgresChainStore, engine, fallback=fallback
        )

    w = worker(ChainEngine(PolicyRuntimes(chain.model_reader())))
    day = 0
    for day in range(warm_days):  # warm the books: strategies past warm-up, orders pending
        w.run(burst_bars(n, day, prices, rng))
    # A fresh process: every strategy is rebuilt from its stored JSON state.
    w = worker(ChainEngine(PolicyRuntimes(chain.model_reader())))
    day += 1
    cold = w.run(burst_bars(n, day, prices, rng))
    warm = []
    for _ in range(3):
        day += 1
        warm.append(w.run(burst_bars(n, day, prices, rng)))
    best = min(warm, key=lambda s: s.seconds)
    print(f"burst setup: {n:,} agents created in {setup:.1f} s")
    print(
        f"burst of {n:,} symbols' bars (one SMA agent each), bulk worker: cold process "
        f"{cold.seconds:.2f} s; warm {', '.join(f'{s.seconds:.2f}' for s in warm)} s "
        f"(best {best.seconds:.2f} s = {n / best.seconds:,.0f} bars/s; target <= 5 s); "
        f"handled per burst: {dict(best.by_handler)}"
    )
    fills = conn.execute("SELECT count(*) FROM fills").fetchone()[0]
    print(f"burst totals: {fills:,} fills over {day + 1} bursts")
    conn.close()


def bench_emulator(url: str, n_bars: int) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.emulators import FunctionServer, PubSubEmulator, gcloud_problem

    from stocktrade.adapters.gcp.pubsub import PubSubEventBus
    from stocktrade.schemas.events import Topic

    problem = gcloud_problem()
    if problem:
        print(f"bar->fill via the Pub/Sub emulator: skipped ({problem})")
        return
    conn = psycopg.connect(url, autocommit=True)
    bars = bars_from_csv(DATA / "daily_us_stocks_stocknet.csv", ["MSFT"], source="stocknet")
    bars = bars[:n_bars]
    with conn.transaction():
        PostgresChainStore(conn).upsert_bars(bars)
    spec = AgentSpec(name="emulator", strategy="sma_crossover", params={"fast": 2, "slow": 3},
                     symbols=("MSFT",), costs=COSTS)  # fmt: skip
    agent = create_agent(PostgresAgentStore(conn), spec)
    emulator = PubSubEmulator.start(timeout=60)
    try:
        project = emulator.new_project()
        env = emulator.function_env(project, url)
        from contextlib import ExitStack

        with ExitStack() as stack:
            for target, topic in (("on_bar", "market-bars"), ("on_signal", "signals"),
                                  ("on_order", "orders"), ("on_fill", "fills")):  # fmt: skip
                server = stack.enter_context(FunctionServer.start(target, env=env))
                emulator.create_push_subscription(
                    project, topic, server.push_endpoint(project, topic), min_backoff_s=1
                )
            bus = PubSubEventBus(project, emulator_host=emulator.host)
            poll = psycopg.connect(url, autocommit=True)

            def state() -> tuple[Any, int, int]:
                row = poll.execute(
                    "SELECT b.decided_ts, b.fill_seq, p.fill_seq FROM chain_books b JOIN "
                    "positions p USING (agent_id, symbol) WHERE b.agent_id = %s",
                    (agent.id,),
                ).fetchone()
                return row[0], int(row[1]), int(row[2])

            latencies, steps = [], []
            for bar in bars:
                _d, fills_before, _a = state()
                started = time.perf_counter()
                bus.publish(Topic.MARKET_BARS, BarEvent.from_domain(bar))
                deadline = started + 30
                filled_at = None
                while time.perf_counter() < deadline:
                    decided, fills, applied = state()
                    now = time.perf_counter()
                    if fills > fills_before and applied >= fills and filled_at is None:
                        filled_at = now
                    if decided is not None and decided >= bar.ts and applied >= fills:
                        break
                    time.sleep(0.002)
                else:
                    raise RuntimeError(f"the chain did not finish bar {bar.ts} within 30 s")
                steps.append(time.perf_counter() - started)
                if filled_at is not None:
                    latencies.append(filled_at - started)
            bus.close()
            poll.close()
        ms = [x * 1e3 for x in latencies]
        print(
            f"bar->fill latency via the Pub/Sub emulator (push to 4 functions-framework "
            f"servers, pure-Python kernels): p50 {pct(ms, 50):.1f} ms, p99 {pct(ms, 99):.1f} ms "
            f"over {len(ms)} fills ({len(bars)} bars; bar fully handled p50 "
            f"{pct(steps, 50) * 1e3:.1f} ms)"
        )
    finally:
        emulator.stop()
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=5000)
    parser.add_argument("--latency-bars", type=int, default=400)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--emulator", action="store_true", help="Also via the Pub/Sub emulator.")
    parser.add_argument("--emulator-bars", type=int, default=60)
    args = parser.parse_args()
    admin_url, url, name = fresh_db()
    try:
        if not args.skip_latency:
            bench_latency(url, args.latency_bars)
        bench_burst(url, args.symbols)
        if args.emulator:
            bench_emulator(url, args.emulator_bars)
        else:
            print("bar->fill via the Pub/Sub emulator: run with --emulator")
    finally:
        drop_db(admin_url, name)


if __name__ == "__main__":
    main()
