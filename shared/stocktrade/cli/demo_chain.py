"""The paper-trading part of ``stocktrade demo``: real bars replayed through the live chain.

Baseline agents (buy-and-hold, SMA crossover, RSI mean reversion) and, when a promoted model
version exists, the trained policy, each with its own paper book on the demo symbols, trade
a replayed half year of real daily bars through the same handlers as the Cloud Functions
(in-process bus, idempotent delivery, outbox). Then the leaderboard, and the divergence
report of every agent against a backtest on the same bars (empty: the chain trades exactly
like the backtest).
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["AGENTS", "DEMO_RANGE", "DEMO_SYMBOLS", "run"]

DEMO_SYMBOLS = ("AAPL", "MSFT", "JPM")
DEMO_RANGE = ("2015-07-01", "2015-12-31")
DEMO_COSTS = {"commission_bps": "5", "slippage_bps": "2"}
DEMO_CASH = Decimal("100000")
#: (agent name, strategy, params)
AGENTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("demo-buy-and-hold", "buy_and_hold", {}),
    ("demo-sma-10-30", "sma_crossover", {"fast": 10, "slow": 30}),
    ("demo-rsi-14", "rsi_mean_reversion", {"window": 14, "lower": 30, "upper": 70}),
)
POLICY_AGENT = "demo-policy"


def _ensure_agents(c: Any, symbols: tuple[str, ...], console: Console) -> list[Any]:
    from rich.markup import escape

    from stocktrade.adapters.postgres.agents import PostgresAgentStore
    from stocktrade.cli.chain import OWNER
    from stocktrade.errors import NotFoundError
    from stocktrade.services.agents import AgentSpec, create_agent, policy_agent_spec

    store = PostgresAgentStore(c.db())
    out = []
    for name, strategy, params in AGENTS:
        try:
            out.append(store.get(name, owner=OWNER))
        except NotFoundError:
            spec = AgentSpec(
                name=name,
                strategy=strategy,
                params=params,
                symbols=symbols,
                initial_cash=DEMO_CASH,
                costs=DEMO_COSTS,
                owner=OWNER,
            )
            out.append(create_agent(store, spec))
    promoted = store.promoted_versions()
    model = promoted[0] if promoted else None
    note = ""
    if model is None:
        # The gate rejected the demo's policy (or none was trained): paper-trade the latest
        # trained candidate anyway, beside the baselines, so its live record can be compared.
        from stocktrade.cli.demo_train import DEMO_AGENT, DEMO_SYMBOL

        model = store.latest_version(DEMO_AGENT)
        note = " (not promoted: paper-traded as a candidate, on the symbol it was trained on)"
        symbols = tuple(s for s in symbols if s == DEMO_SYMBOL)
    if model is None or not symbols:
        console.print("no trained model version yet: paper-trading the baselines only")
        return out
    try:
        out.append(store.get(POLICY_AGENT, owner=OWNER))
    except NotFoundError:
        try:
            spec = policy_agent_spec(
                model, name=POLICY_AGENT, symbols=symbols, initial_cash=DEMO_CASH, owner=OWNER,
                follow_promotions=bool(promoted),
            )
            out.append(create_agent(store, spec))
        except Exception as exc:  # a model the chain cannot run: say why, go on
            console.print(f"[yellow]trained agent skipped: {exc}[/yellow]")
            return out
    console.print(
        f"trained agent {POLICY_AGENT}: model {model.agent_name}:{model.version} "
        f"({escape(model.status)}){note}"
    )
    return out


def run(console: Console) -> None:
    """Replay the demo period through the chain; print the leaderboard and divergence."""
    from stocktrade.adapters.postgres.bars import PostgresBarRepository
    from stocktrade.adapters.postgres.chain import PostgresChainStore
    from stocktrade.backtest.config import parse_utc
    from stocktrade.cli.chain import container, print_leaderboard, replay_bars
    from stocktrade.services import chain
    from stocktrade.services.divergence import divergence_report

    c = container()
    repo = PostgresBarRepository(c.db())
    stored = {s.symbol for s in repo.summary(list(DEMO_SYMBOLS)) if s.timeframe == "1d"}
    symbols = tuple(s for s in DEMO_SYMBOLS if s in stored)
    if not symbols:
        console.print(
            f"[yellow]no daily bars for {', '.join(DEMO_SYMBOLS)}: import "
            "daily_us_stocks_stocknet.csv to run the paper-trading demo[/yellow]"
        )
        return
    agents = _ensure_agents(c, symbols, console)
    start, end = DEMO_RANGE
    console.print(
        f"paper-trading {len(agents)} agents on {', '.join(symbols)}: replaying daily bars "
        f"{start} -> {end} through the chain (in-process bus, idempotent delivery, outbox)"
    )
    started = time.perf_counter()
    done = replay_bars(
        c,
        list(symbols),
        parse_utc(start, "start"),
        parse_utc(end + "T23:59:59", "end"),
    )
    elapsed = time.perf_counter() - started
    console.print(
        f"replayed {done['bars']:,} bars in {elapsed:.1f} s "
        "(bars already handled are skipped: a rerun is idempotent)"
    )
    print_leaderboard(c, {a.name for a in agents})
    store = PostgresChainStore(c.db())
    runtimes = chain.engine_for(c).runtimes
    for agent in agents:
        report = divergence_report(agent, store, repo.load, runtimes=runtimes)
        style = "green" if report.ok else "red"
        console.print(f"[{style}]divergence[/{style}] {report.summary()}", markup=True)
        for d in report.differences[:5]:
            console.print(f"  {d}", markup=False)
