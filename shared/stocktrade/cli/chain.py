"""``stocktrade chain``: paper-trade agents on replayed bars; leaderboard, decisions, divergence.

Commands::

    stocktrade chain agents create NAME --strategy sma_crossover --param fast=10 --param slow=30
        --symbols AAPL,MSFT [--cash 100000] [--cost commission_bps=5] [--risk allow_short=true]
    stocktrade chain agents create NAME --model <model version id> --symbols AAPL
    stocktrade chain agents list
    stocktrade chain replay [--symbols AAPL,MSFT] [--from 2015-01-01] [--to 2015-12-31]
        [--speed 0] [--csv FILE] [--bulk]
    stocktrade chain leaderboard
    stocktrade chain decisions NAME [--from ..] [--to ..] [--symbol AAPL] [--limit 50] [--json]
    stocktrade chain divergence NAME [--from ..] [--to ..]

``replay`` publishes recorded bars to ``market-bars`` as the ingester would. With the
in-process bus (the default) the whole chain runs in this process, through the same
delivery service and handlers as the Cloud Functions; with ``bus=pubsub`` the bars go to
Pub/Sub and the deployed functions trade them.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from stocktrade.cli import handle_errors
from stocktrade.cli.common import console

if TYPE_CHECKING:
    from stocktrade.bootstrap import Container
    from stocktrade.services.agents import AgentConfig

__all__ = ["OWNER", "app", "register"]

OWNER = "local"  # the CLI acts as the laptop's single user

app = typer.Typer(help="Paper-trade agents through the live chain.", no_args_is_help=True)
agents_app = typer.Typer(help="Create and list paper-trading agents.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")


def register(root: typer.Typer) -> None:
    """Add ``chain`` to the root command."""
    root.add_typer(app, name="chain")


def container() -> Container:
    from stocktrade.bootstrap import bootstrap

    return bootstrap()


def _kv(items: list[str], what: str) -> dict[str, Any]:
    from stocktrade.errors import ValidationError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValidationError(f"{what} must be KEY=VALUE, found {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _when(text: str | None, *, end: bool = False) -> datetime | None:
    from datetime import timedelta

    from stocktrade.backtest.config import parse_utc

    if text is None:
        return None
    value = parse_utc(text, "--to" if end else "--from")
    if end and value is not None and len(text.strip()) == 10:  # a plain date: the whole day
        value = value + timedelta(days=1) - timedelta(microseconds=1)
    return value


def _fmt_pct(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-"
    return "-" if v != v else f"{v * 100:+.2f}%"


def _fmt(x: Any, digits: int = 2) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-"
    return "-" if v != v else f"{v:.{digits}f}"


# -- agents ---------------------------------------------------------------------------------
@agents_app.command("create")
@handle_errors
def create(
    name: str = typer.Argument(..., help="Agent name (unique for you)."),
    symbols: str = typer.Option(..., "--symbols", help="Comma-separated symbols to trade."),
    strategy: str = typer.Option(
        None, "--strategy", help="Baseline: buy_and_hold, sma_crossover, rsi_mean_reversion."
    ),
    param: list[str] = typer.Option([], "--param", help="Strategy parameter KEY=VALUE."),
    model: str = typer.Option(None, "--model", help="A model version id: trade that policy."),
    cash: str = typer.Option("100000", "--cash", help="Starting cash, split over the symbols."),
    cost: list[str] = typer.Option([], "--cost", help="Cost KEY=VALUE (commission_bps, ...)."),
    risk: list[str] = typer.Option([], "--risk", help="Risk limit KEY=VALUE (allow_short, ...)."),
    timeframe: str = typer.Option("1d", "--timeframe", help="Bar timeframe traded."),
) -> None:
    """Create an agent with its own paper book per symbol."""
    from uuid import UUID

    from stocktrade.adapters.postgres.agents import PostgresAgentStore
    from stocktrade.errors import ValidationError
    from stocktrade.services.agents import AgentSpec, create_agent, policy_agent_spec

    store = PostgresAgentStore(container().db())
    syms = tuple(s.strip() for s in symbols.split(",") if s.strip())
    if (strategy is None) == (model is None):
        raise ValidationError("give either --strategy (a baseline) or --model (a policy version)")
    if model is not None:
        try:
            version = store.model_version(UUID(model))
        except ValueError as exc:
            raise ValidationError(f"--model must be a model version id, found {model!r}") from exc
        spec = policy_agent_spec(
            version,
            name=name,
            symbols=syms,
            initial_cash=Decimal(cash),
            costs=_kv(cost, "--cost"),
            risk=_kv(risk, "--risk"),
            owner=OWNER,
            timeframe=timeframe,
        )
    else:
        spec = AgentSpec(
            name=name,
            strategy=strategy,
            symbols=syms,
            params=_kv(param, "--param"),
            timeframe=timeframe,
            initial_cash=Decimal(cash),
            risk=_kv(risk, "--risk"),
            costs=_kv(cost, "--cost"),
            owner=OWNER,
        )
    agent = create_agent(store, spec)
    console.print(
        f"created agent [bold]{agent.name}[/bold] ({agent.id}): {agent.strategy} on "
        f"{', '.join(agent.symbols)}, {agent.initial_cash} cash"
    )


@agents_app.command("list")
@handle_errors
def list_agents() -> None:
    """Your agents."""
    from rich.table import Table

    from stocktrade.adapters.postgres.agents import PostgresAgentStore

    agents = PostgresAgentStore(container().db()).list(owner=OWNER)
    table = Table(title="agents")
    for col in ("name", "id", "kind", "strategy", "symbols", "cash", "status"):
        table.add_column(col)
    for a in agents:
        strategy = a.strategy if a.model is None else f"{a.model.agent_name} v{a.model.version}"
        table.add_row(
            a.name,
            str(a.id)[:8],
            a.kind,
            strategy,
            ",".join(a.symbols),
            str(a.initial_cash),
            a.status,
        )
    console.print(table)


# -- replay ---------------------------------------------------------------------------------
def replay_bars(
    c: Container,
    symbols: list[str] | None,
    start: datetime | None,
    end: datetime | None,
    *,
    speed: float = 0.0,
    csv: Path | None = None,
    bulk: bool = False,
    timeframe: str = "1d",
    progress: Any = None,
) -> dict[str, Any]:
    """Replay stored (or CSV) bars through the chain; returns what happened.

    With the in-process bus the chain handlers run here, through the delivery service (or
    the bulk worker with ``bulk``); with Pub/Sub the bars are only published.
    """
    from types import SimpleNamespace

    from stocktrade.adapters.market.replay import BarReplay, bars_from_csv, bars_from_repository
    from stocktrade.adapters.postgres.agents import PostgresAgentStore
    from stocktrade.errors import ValidationError
    from stocktrade.services import chain

    conn = c.db()
    if not symbols:
        symbols = sorted(
            {
                s
                for a in PostgresAgentStore(conn).list()
                for s in a.symbols
                if a.status == "active" and a.timeframe == timeframe
            }
        )
    if not symbols:
        raise ValidationError("no symbols to replay: create an agent or pass --symbols")
    bars = (
        bars_from_csv(csv, symbols, start, end, timeframe=timeframe)
        if csv is not None
        else bars_from_repository(conn, symbols, timeframe, start, end)
    )
    engine = chain.engine_for(c)
    if c.settings.bus == "pubsub":
        stats = BarReplay(c.bus(), speed=speed).run(bars, on_timestamp=progress)
        return {"bars": stats.bars, "seconds": stats.seconds, "where": "pubsub"}
    if bulk:
        from itertools import groupby

        from stocktrade.adapters.postgres.chain import PostgresBulkDelivery, PostgresChainStore
        from stocktrade.schemas.events import Bar as BarEvent
        from stocktrade.services.chain_worker import BulkChainWorker

        delivery = c.delivery()
        worker = BulkChainWorker(
            PostgresBulkDelivery(conn),
            PostgresChainStore,
            engine,
            fallback=lambda h, e: delivery.handle(h, e, chain.HANDLERS[h].effect),
        )
        import time

        started = time.perf_counter()
        n = 0
        for ts, group in groupby(bars, key=lambda b: b.ts):
            events = [BarEvent.from_domain(b) for b in group]
            worker.run(events)
            n += len(events)
            if progress is not None:
                progress(ts, n)
        return {"bars": n, "seconds": time.perf_counter() - started, "where": "bulk"}
    from stocktrade.adapters.local.bus import InProcessEventBus
    from stocktrade.adapters.postgres.delivery import PostgresDeliveryStore
    from stocktrade.services.delivery import DeliveryService

    bus = InProcessEventBus(record=False)
    deps = SimpleNamespace(chain_engine=engine, store=c.store, settings=c.settings)
    delivery = DeliveryService(PostgresDeliveryStore(c.db), bus, mirror=c.mirror(), deps=deps)
    chain.subscribe(bus, delivery)
    stats = BarReplay(bus, speed=speed).run(bars, on_timestamp=progress)
    delivery.relay_all()
    return {"bars": stats.bars, "seconds": stats.seconds, "where": "in-process"}


@app.command("replay")
@handle_errors
def replay(
    symbols: str = typer.Option(None, "--symbols", help="Comma-separated (default: traded ones)."),
    start: str = typer.Option(None, "--from", help="First bar (date or time, UTC)."),
    end: str = typer.Option(None, "--to", help="Last bar (a date includes the whole day)."),
    speed: float = typer.Option(0.0, "--speed", help="Time compression; 0 = as fast as possible."),
    csv: Path = typer.Option(None, "--csv", help="Replay this bar CSV instead of stored bars."),
    bulk: bool = typer.Option(False, "--bulk", help="Bulk worker: one transaction per timestamp."),
    timeframe: str = typer.Option("1d", "--timeframe"),
) -> None:
    """Publish recorded bars to market-bars; the chain paper-trades every active agent."""
    c = container()
    syms = [s.strip() for s in symbols.split(",")] if symbols else None
    with console.status("replaying bars..."):
        done = replay_bars(
            c,
            syms,
            _when(start),
            _when(end, end=True),
            speed=speed,
            csv=csv,
            bulk=bulk,
            timeframe=timeframe,
        )
    rate = done["bars"] / done["seconds"] if done["seconds"] > 0 else 0.0
    console.print(
        f"replayed {done['bars']:,} bars ({done['where']}) in {done['seconds']:.1f} s "
        f"({rate:,.0f} bars/s)"
    )


# -- leaderboard ----------------------------------------------------------------------------
def print_leaderboard(c: Container, names: set[str] | None = None, *, refresh: bool = True) -> None:
    """Refresh (optionally) and print the leaderboard."""
    from rich.table import Table

    from stocktrade.adapters.postgres.chain import PostgresChainStore

    conn = c.db()
    store = PostgresChainStore(conn)
    if refresh:
        from stocktrade.adapters.postgres.agents import PostgresAgentStore

        with conn.transaction():
            store.refresh_leaderboard([a.id for a in PostgresAgentStore(conn).list(owner=OWNER)])
    rows = [r for r in store.leaderboard(owner=OWNER) if names is None or r["name"] in names]
    table = Table(title="leaderboard (paper trading)")
    for col in (
        "#",
        "agent",
        "strategy",
        "return",
        "sharpe",
        "max dd",
        "trades",
        "fills",
        "equity",
        "as of",
    ):
        table.add_column(col, justify="right" if col not in ("agent", "strategy") else "left")
    for i, r in enumerate(rows, 1):
        table.add_row(
            str(i),
            r["name"],
            r["strategy"],
            _fmt_pct(r["total_return"]),
            _fmt(r["sharpe"]),
            _fmt_pct(r["max_drawdown"]),
            str(r["trades"]),
            str(r["n_fills"]),
            _fmt(r["equity"]),
            r["as_of"].date().isoformat() if r["as_of"] else "-",
        )
    console.print(table)


@app.command("leaderboard")
@handle_errors
def leaderboard(
    no_refresh: bool = typer.Option(
        False, "--no-refresh", help="Show the stored rows as they are."
    ),
) -> None:
    """Agents ranked by return (Sharpe, max drawdown, trades) from their equity snapshots."""
    print_leaderboard(container(), refresh=not no_refresh)


# -- decisions ------------------------------------------------------------------------------
def _agent(c: Container, name: str) -> AgentConfig:
    from stocktrade.adapters.postgres.agents import PostgresAgentStore

    return PostgresAgentStore(c.db()).get(name, owner=OWNER)


@app.command("decisions")
@handle_errors
def decisions(
    agent: str = typer.Argument(..., help="Agent name or id."),
    start: str = typer.Option(None, "--from"),
    end: str = typer.Option(None, "--to"),
    symbol: str = typer.Option(None, "--symbol"),
    limit: int = typer.Option(50, "--limit"),
    as_json: bool = typer.Option(False, "--json", help="Full records as JSON lines."),
) -> None:
    """The agent's decision log (FMEL): market state, policy output, risk checks, orders."""
    from stocktrade.adapters.postgres.chain import PostgresChainStore
    from stocktrade.services.decision_log import decision_log, format_entry

    c = container()
    a = _agent(c, agent)
    entries = decision_log(
        PostgresChainStore(c.db()),
        a.id,
        _when(start),
        _when(end, end=True),
        symbol=symbol,
        limit=limit,
    )
    if as_json:
        for e in entries:
            typer.echo(json.dumps(e.to_dict()))
        return
    console.print(f"{a.name}: {len(entries)} decision(s)")
    for e in entries:
        console.print(format_entry(e), markup=False)


# -- divergence -----------------------------------------------------------------------------
@app.command("divergence")
@handle_errors
def divergence(
    agent: str = typer.Argument(..., help="Agent name or id."),
    start: str = typer.Option(None, "--from"),
    end: str = typer.Option(None, "--to"),
    limit: int = typer.Option(20, "--limit", help="Differences to print."),
) -> None:
    """Compare the agent's chain orders, fills and equity with a backtest on the same bars."""
    from stocktrade.adapters.postgres.bars import PostgresBarRepository
    from stocktrade.adapters.postgres.chain import PostgresChainStore
    from stocktrade.services import chain
    from stocktrade.services.divergence import divergence_report

    c = container()
    a = _agent(c, agent)
    report = divergence_report(
        a,
        PostgresChainStore(c.db()),
        PostgresBarRepository(c.db()).load,
        start=_when(start),
        end=_when(end, end=True),
        runtimes=chain.engine_for(c).runtimes,
    )
    console.print(report.summary(), markup=False)
    for d in report.differences[:limit]:
        console.print(f"  {d}", markup=False)
    if not report.ok:
        raise typer.Exit(1)
