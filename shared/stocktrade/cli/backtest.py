"""``stocktrade backtest`` and ``stocktrade runs``: run backtests, follow and cancel runs.

``stocktrade backtest`` validates the request (nothing is recorded if it is bad, exit 2),
records it as a run and executes it in this process; with ``--detach`` it launches the
backtest job instead (a subprocess running ``python -m jobs.backtest.main``, or Cloud Run
with ``STOCKTRADE_JOB_LAUNCHER=cloudrun``) and returns at once with the run id.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from stocktrade.cli import handle_errors
from stocktrade.cli.common import connection, console, err_console, settings

if TYPE_CHECKING:
    from stocktrade.bootstrap import Container
    from stocktrade.domain.runs import Run

OWNER = "local"  # the CLI acts as the laptop's single user

runs_app = typer.Typer(
    help="List, inspect and cancel training and backtest runs.", no_args_is_help=True
)

# Metrics shown in the short summary after a run.
SUMMARY_METRICS = (
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "max_drawdown",
    "n_trades",
    "win_rate",
    "total_fees",
    "final_equity",
)


def register(app: typer.Typer) -> None:
    """Add ``backtest`` and ``runs`` to the root command."""
    app.command("backtest")(backtest)
    app.add_typer(runs_app, name="runs")


def container() -> Container:
    """The composition root on the CLI's connection (started with a status spinner)."""
    from stocktrade.bootstrap import bootstrap

    return bootstrap(settings(), db=connection())


def parse_param(text: str) -> tuple[str, Any]:
    """``name=value`` -> (name, int | float | bool | str)."""
    from stocktrade.errors import ValidationError

    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValidationError(f"--param must look like name=value (e.g. fast=10), found {text!r}")
    raw = raw.strip()
    value: Any = raw
    if raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    else:
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
    return name, value


def display_uri(uri: str) -> str:
    """A ``file://`` URI as a local path (what a person can open); others unchanged."""
    if uri.startswith("file://"):
        from stocktrade.adapters.local.object_store import root_from_url

        return str(root_from_url(uri))
    return uri


def metric_text(metrics: dict[str, Any] | None, key: str) -> str:
    """One metric formatted like the report does."""
    from stocktrade.backtest.report import METRIC_ROWS, format_metric

    kinds = {k: kind for k, _label, kind in METRIC_ROWS}
    if not metrics or key not in metrics:
        return "n/a"
    return format_metric(metrics[key], kinds.get(key, "num"))


def print_run(run: Run, *, full: bool = True) -> None:
    """A run's status, progress, metrics and artifacts."""
    from stocktrade.backtest.report import METRIC_ROWS

    colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(
        run.status.value, "cyan"
    )
    console.print(
        f"run [bold]{run.id}[/bold] ({run.kind.value}) [{colour}]{run.status.value}[/{colour}]"
        f" {run.progress:.0%}" + (f" - {run.message}" if run.message else "")
    )
    cfg = run.config
    if run.kind.value == "backtest" and cfg:
        params = ", ".join(f"{k}={v}" for k, v in (cfg.get("params") or {}).items())
        console.print(
            f"  {cfg.get('strategy')}({params}) on {', '.join(cfg.get('symbols', []))} "
            f"{cfg.get('timeframe', '1d')} {cfg.get('start') or 'first'} -> {cfg.get('end') or 'last'}"
        )
    times = [f"created {run.created_at:%Y-%m-%d %H:%M:%S}" if run.created_at else ""]
    if run.duration_seconds is not None:
        times.append(f"ran {run.duration_seconds:.1f} s")
    if run.eta_seconds and not run.is_terminal:
        times.append(f"eta {run.eta_seconds:.0f} s")
    if run.execution:
        times.append(f"execution {run.execution}")
    console.print("  " + ", ".join(t for t in times if t))
    if run.cancel_requested and not run.is_terminal:
        console.print("  [yellow]cancellation requested[/yellow]")
    if run.error:
        console.print(f"  [red]error:[/red] {run.error}", soft_wrap=True)
    if run.metrics and full:
        table = Table(title="metrics", show_header=False)
        table.add_column("metric")
        table.add_column("value", justify="right")
        shown = set()
        for key, label, _kind in METRIC_ROWS:
            if key in run.metrics:
                shown.add(key)
                table.add_row(label, metric_text(run.metrics, key))
        console.print(table)
    if run.artifacts:
        console.print("  artifacts:")
        for name, uri in sorted(run.artifacts.items()):
            console.print(f"    {name:<13} {display_uri(uri)}", soft_wrap=True)


def _request(
    strategy: str,
    symbols: str,
    start: str | None,
    end: str | None,
    params: list[str],
    timeframe: str,
    cash: str | None,
    commission_bps: str | None,
    commission_per_share: str | None,
    slippage_bps: str | None,
    allow_short: bool,
    fill_rule: str | None,
    close_at_end: bool,
    cash_allocation: str | None,
) -> dict[str, Any]:
    from stocktrade.services.backtest_runs import STRATEGIES, canonical_strategy

    request: dict[str, Any] = {
        "strategy": strategy,
        "symbols": [s.strip() for s in symbols.split(",") if s.strip()],
        "start": start,
        "end": end,
        "timeframe": timeframe,
        "params": dict(parse_param(p) for p in params),
    }
    if cash is not None:
        request["initial_cash"] = str(cash)
    costs = {
        k: str(v)
        for k, v in (
            ("commission_bps", commission_bps),
            ("commission_per_share", commission_per_share),
            ("slippage_bps", slippage_bps),
        )
        if v is not None
    }
    if costs:
        request["costs"] = costs
    if allow_short:
        request["risk"] = {"allow_short": True}
        cls = STRATEGIES.get(canonical_strategy(strategy))
        if cls is not None and "allow_short" in inspect.signature(cls).parameters:
            request["params"].setdefault("allow_short", True)
    options: dict[str, Any] = {}
    if fill_rule:
        options["fill_rule"] = fill_rule
    if close_at_end:
        options["close_at_end"] = True
    if cash_allocation:
        options["cash_allocation"] = cash_allocation
    if options:
        request["options"] = options
    return request


@handle_errors
def backtest(
    strategy: str = typer.Option(
        ..., "--strategy", "-s", help="buy_and_hold, sma_crossover or rsi_mean_reversion."
    ),
    symbols: str = typer.Option(..., "--symbols", help="Comma-separated symbols, e.g. AAPL,MSFT."),
    start: str | None = typer.Option(
        None, "--from", help="First day (inclusive), e.g. 2013-01-01."
    ),
    end: str | None = typer.Option(None, "--to", help="Last day (inclusive), e.g. 2015-12-31."),
    param: list[str] = typer.Option(
        [], "--param", "-p", help="Strategy parameter name=value (repeatable): fast=10."
    ),
    timeframe: str = typer.Option("1d", "--timeframe", help="Bar timeframe: 1d, 1h, 15m, 5m, 1m."),
    cash: str | None = typer.Option(None, "--cash", help="Initial cash (default 100000)."),
    commission_bps: str | None = typer.Option(
        None, "--commission-bps", help="Commission in basis points of traded value."
    ),
    commission_per_share: str | None = typer.Option(
        None, "--commission-per-share", help="Commission per unit traded."
    ),
    slippage_bps: str | None = typer.Option(
        None, "--slippage-bps", help="Adverse slippage in basis points."
    ),
    allow_short: bool = typer.Option(False, "--allow-short", help="Let the strategy go short."),
    fill_rule: str | None = typer.Option(None, "--fill-rule", help="next_open (default) or close."),
    close_at_end: bool = typer.Option(
        False, "--close-at-end", help="Flatten every position at the last close."
    ),
    cash_allocation: str | None = typer.Option(
        None, "--cash-allocation", help="split (default: cash shared out) or each."
    ),
    detach: bool = typer.Option(
        False, "--detach", help="Launch the backtest job and return at once with the run id."
    ),
) -> None:
    """Backtest a strategy on stored bars; writes a run, metrics and artifacts (report.html)."""
    from stocktrade.services.backtest_runs import execute_backtest_run, submit_backtest

    request = _request(
        strategy,
        symbols,
        start,
        end,
        param,
        timeframe,
        cash,
        commission_bps,
        commission_per_share,
        slippage_bps,
        allow_short,
        fill_rule,
        close_at_end,
        cash_allocation,
    )
    c = container()
    if detach:
        run = submit_backtest(
            request,
            runs=c.runs(),
            bars=c.bars(),
            store=c.store(),
            launcher=c.job_launcher(),
            owner=OWNER,
        )
        console.print(f"run [bold]{run.id}[/bold] queued; job execution {run.execution}")
        console.print(f"follow it with: stocktrade runs show {run.id} --wait")
        return
    run = submit_backtest(request, runs=c.runs(), bars=c.bars(), store=c.store(), owner=OWNER)
    started = time.perf_counter()
    try:
        with err_console.status(f"backtesting run {run.id} ..."):
            run = execute_backtest_run(
                run.id,
                runs=c.runs(),
                bars=c.bars(),
                store=c.store(),
                engine=c.backtest_engine(),
                execution="cli",
                context={"mode": "in-process"},
                capture_log=True,
            )
    except Exception:
        print_run(c.runs().get(run.id))
        raise
    print_run(run)
    console.print(f"done in {time.perf_counter() - started:.2f} s")
    if run.status.value != "succeeded":
        raise typer.Exit(1)


@runs_app.command("list")
@handle_errors
def list_runs(
    kind: str | None = typer.Option(None, "--kind", help="train or backtest."),
    status: str | None = typer.Option(
        None, "--status", help="queued, running, succeeded, failed or cancelled."
    ),
    limit: int = typer.Option(20, "--limit", "-n", help="How many (newest first)."),
) -> None:
    """Your runs, newest first."""
    runs = container().runs().list(owner=OWNER, kind=kind, status=status, limit=limit)
    table = Table(title=f"runs ({len(runs)})")
    for col in (
        "id",
        "kind",
        "status",
        "progress",
        "created",
        "strategy / config",
        "return",
        "sharpe",
        "message",
    ):
        table.add_column(
            col,
            justify="right" if col in ("progress", "return", "sharpe") else "left",
            overflow="fold",
        )
    for r in runs:
        cfg = r.config or {}
        what = (
            f"{cfg.get('strategy', '')} {','.join(cfg.get('symbols', []))}"
            if r.kind.value == "backtest"
            else str(cfg.get("agent", cfg.get("name", "")))
        )
        table.add_row(
            r.id[:8],
            r.kind.value,
            r.status.value,
            f"{r.progress:.0%}",
            f"{r.created_at:%Y-%m-%d %H:%M}" if r.created_at else "",
            what.strip(),
            metric_text(r.metrics, "total_return"),
            metric_text(r.metrics, "sharpe"),
            (r.error or r.message or "")[:60],
        )
    console.print(table)


@runs_app.command("show")
@handle_errors
def show_run(
    run_id: str = typer.Argument(..., help="Run id (or a unique prefix of at least 4 characters)."),
    wait: bool = typer.Option(False, "--wait", help="Follow the run until it finishes."),
    timeout: float = typer.Option(
        3600.0, "--timeout", help="Give up waiting after this many seconds."
    ),
) -> None:
    """One run: status, progress, metrics, artifacts (paths you can open)."""
    from stocktrade.errors import TransientError

    repo = container().runs()
    rid = repo.resolve(run_id, owner=OWNER)
    run = repo.get(rid, owner=OWNER)
    if wait and not run.is_terminal:
        deadline = time.monotonic() + timeout
        with err_console.status("") as status:
            while not run.is_terminal:
                if time.monotonic() > deadline:
                    print_run(run)
                    raise TransientError(
                        f"run {rid} still {run.status.value} after {timeout:.0f} s"
                    )
                status.update(
                    f"run {rid[:8]} {run.status.value} {run.progress:.0%} {run.message or ''}"
                )
                time.sleep(0.5)
                run = repo.get(rid, owner=OWNER)
    print_run(run)
    if wait and run.status.value == "failed":
        raise typer.Exit(1)


@runs_app.command("cancel")
@handle_errors
def cancel_run(
    run_id: str = typer.Argument(..., help="Run id (or a unique prefix of at least 4 characters)."),
) -> None:
    """Cancel a run: a queued run stops at once, a running one at its next checkpoint."""
    repo = container().runs()
    rid = repo.resolve(run_id, owner=OWNER)
    run = repo.request_cancel(rid, owner=OWNER)
    if run.status.value == "cancelled":
        console.print(f"run {rid} cancelled before it started")
    else:
        console.print(
            f"run {rid} is {run.status.value}; cancellation requested "
            "(it stops at its next checkpoint)"
        )


def report_path(run: Run) -> Path | None:
    """Local path of a run's report.html (None if it is not in a local store)."""
    uri = (run.artifacts or {}).get("report.html")
    if not uri or not uri.startswith("file://"):
        return None
    return Path(display_uri(uri))
