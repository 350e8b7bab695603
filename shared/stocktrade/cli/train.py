"""``stocktrade train`` and ``stocktrade models``: train policies, inspect and promote versions.

``stocktrade train`` validates the request (nothing is recorded if it is bad, exit 2), records
it as a run and trains in this process with a progress bar; with ``--detach`` it launches the
training job instead (``python -m jobs.train.main`` as a subprocess, or Cloud Run with
``STOCKTRADE_JOB_LAUNCHER=cloudrun``) and returns at once with the run id. Either way the run
ends with a registered model version and the promotion gate's decision.

torch is imported only when training starts, never by loading the command line.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from stocktrade.cli import handle_errors
from stocktrade.cli.common import console, err_console

if TYPE_CHECKING:
    from rich.console import Console

    from stocktrade.domain.model_versions import ModelVersion
    from stocktrade.services.training import TrainingProgress, TrainingResult

models_app = typer.Typer(
    help="List, inspect and promote trained model versions.", no_args_is_help=True
)

#: Metrics of the gate comparison table: (key, label, kind for format_metric).
GATE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("total_return", "total return", "pct"),
    ("cagr", "CAGR", "pct"),
    ("sharpe", "Sharpe", "ratio"),
    ("sortino", "Sortino", "ratio"),
    ("max_drawdown", "max drawdown", "pct"),
    ("annual_volatility", "volatility", "pct"),
    ("n_trades", "closed trades", "int"),
    ("exposure", "time in market", "pct"),
    ("total_fees", "fees", "money"),
    ("final_equity", "final equity", "money"),
)


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``models`` to the root command."""
    app.command("train")(train)
    app.add_typer(models_app, name="models")


def _fmt(value: Any, kind: str) -> str:
    from stocktrade.backtest.report import format_metric

    return format_metric(value, kind)


def parse_net_arch(text: str) -> list[int]:
    """``"64,64"`` -> ``[64, 64]``."""
    from stocktrade.errors import ValidationError

    try:
        sizes = [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise ValidationError(
            f"--net-arch must be comma-separated layer sizes like 64,64, found {text!r}"
        ) from None
    if not sizes:
        raise ValidationError(f"--net-arch needs at least one layer size, found {text!r}")
    return sizes


def build_request(
    *,
    agent: str,
    symbols: str,
    train_from: str | None,
    train_to: str,
    val_from: str,
    val_to: str,
    timesteps: int,
    seed: int,
    net_arch: str,
    n_envs: int,
    episode_length: int,
    commission_bps: float | None,
    slippage_bps: float | None,
    allow_short: bool,
    gate_metric: str,
    gate_margin: float,
    folds: int,
    promote: bool,
    timeframe: str,
) -> dict[str, Any]:
    """The training request of the command's options (validated by the service)."""
    n_steps = 256
    env: dict[str, Any] = {"random_start": True, "episode_length": episode_length}
    if commission_bps is not None:
        env["commission_bps"] = commission_bps
    if slippage_bps is not None:
        env["slippage_bps"] = slippage_bps
    if allow_short:
        env["allow_short"] = True
    return {
        "agent": agent,
        "symbols": [s.strip() for s in symbols.split(",") if s.strip()],
        "timeframe": timeframe,
        "train_start": train_from,
        "train_end": train_to,
        "val_start": val_from,
        "val_end": val_to,
        "walk_forward_folds": folds,
        "env": env,
        "ppo": {
            "total_timesteps": timesteps,
            "n_envs": n_envs,
            "n_steps": n_steps,
            # Minibatches of a quarter rollout (at least 64), never larger than the rollout.
            "batch_size": min(n_steps * n_envs, max(64, n_steps * n_envs // 4)),
            "net_arch": parse_net_arch(net_arch),
            "seed": seed,
        },
        "gate": {"metric": gate_metric, "margin": gate_margin, "auto_promote": promote},
    }


class _Bar:
    """A rich progress bar fed by the training service's progress reports."""

    def __init__(self, target: Console) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.fields[stage]:<8}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("eta {task.fields[eta]}"),
            TextColumn("{task.description}"),
            console=target,
            transient=False,
        )
        self.task = self.progress.add_task("starting", total=1.0, stage="queued", eta="-")

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, p: TrainingProgress) -> None:
        eta = "-" if p.eta_seconds is None else f"{p.eta_seconds:,.0f}s"
        self.progress.update(
            self.task, completed=p.fraction, description=p.message[:90], stage=p.stage, eta=eta
        )


@handle_errors
def train(
    agent: str = typer.Option(..., "--agent", "-a", help="Agent name the policy is registered as."),
    symbols: str = typer.Option(..., "--symbols", help="Comma-separated symbols, e.g. AAPL."),
    train_from: str | None = typer.Option(
        None, "--train-from", help="First training day, e.g. 2012-09-01 (default: first bar)."
    ),
    train_to: str = typer.Option(..., "--train-to", help="Last training day, e.g. 2014-12-31."),
    val_from: str = typer.Option(..., "--val-from", help="First validation day, e.g. 2015-01-01."),
    val_to: str = typer.Option(..., "--val-to", help="Last validation day, e.g. 2015-12-31."),
    timesteps: int = typer.Option(20_000, "--timesteps", help="PPO env steps to train for."),
    seed: int = typer.Option(0, "--seed", help="Seed of everything random (reproducible runs)."),
    net_arch: str = typer.Option("64,64", "--net-arch", help="Hidden layer sizes, e.g. 64,64."),
    n_envs: int = typer.Option(8, "--n-envs", help="Parallel environments per rollout."),
    episode_length: int = typer.Option(
        252, "--episode-length", help="Bars per training episode (random starts)."
    ),
    commission_bps: float | None = typer.Option(
        None, "--commission-bps", help="Commission in basis points (default 1)."
    ),
    slippage_bps: float | None = typer.Option(
        None, "--slippage-bps", help="Slippage in basis points (default 2)."
    ),
    allow_short: bool = typer.Option(False, "--allow-short", help="Let SELL go short."),
    gate_metric: str = typer.Option(
        "sharpe", "--gate-metric", help="sharpe, sortino, total_return, cagr, calmar, max_drawdown."
    ),
    gate_margin: float = typer.Option(
        0.0, "--gate-margin", help="Lead over the best baseline needed to promote."
    ),
    folds: int = typer.Option(1, "--folds", help="Walk-forward folds over the validation range."),
    promote: bool = typer.Option(
        True, "--promote/--no-promote", help="Promote a version that passes the gate."
    ),
    timeframe: str = typer.Option("1d", "--timeframe", help="Bar timeframe: 1d, 1h, 15m, 5m, 1m."),
    detach: bool = typer.Option(
        False, "--detach", help="Launch the training job and return at once with the run id."
    ),
) -> None:
    """Train a PPO policy on stored bars, register it, and gate it against the baselines."""
    from stocktrade.cli.backtest import OWNER, container
    from stocktrade.services.training import execute_training_run, submit_training

    request = build_request(
        agent=agent, symbols=symbols, train_from=train_from, train_to=train_to,
        val_from=val_from, val_to=val_to, timesteps=timesteps, seed=seed, net_arch=net_arch,
        n_envs=n_envs, episode_length=episode_length, commission_bps=commission_bps,
        slippage_bps=slippage_bps, allow_short=allow_short, gate_metric=gate_metric,
        gate_margin=gate_margin, folds=folds, promote=promote, timeframe=timeframe,
    )  # fmt: skip
    c = container()
    if detach:
        with err_console.status("validating the request ..."):
            run = submit_training(
                request, runs=c.runs(), bars=c.bars(), store=c.store(), models=c.models(),
                launcher=c.job_launcher(), owner=OWNER,
            )  # fmt: skip
        console.print(f"run [bold]{run.id}[/bold] queued; job execution {run.execution}")
        console.print(f"follow it with: stocktrade runs show {run.id} --wait")
        return
    with err_console.status("validating the request ..."):
        deps = c.training()
        run = submit_training(
            request, runs=deps.runs, bars=deps.bars, store=deps.store, models=deps.models,
            owner=OWNER,
        )  # fmt: skip
    started = time.perf_counter()
    try:
        with _Bar(err_console) as bar:
            result = execute_training_run(
                run.id,
                deps=deps,
                execution="cli",
                context={"mode": "in-process"},
                capture_log=True,
                on_progress=bar,
            )
    except Exception:
        from stocktrade.cli.backtest import print_run

        print_run(c.runs().get(run.id), full=False)
        raise
    print_training(console, result)
    console.print(f"done in {time.perf_counter() - started:.1f} s")
    if result.run.status.value != "succeeded":
        raise typer.Exit(1)


def gate_table(version: ModelVersion, *, title: str | None = None) -> Table:
    """The gate's comparison: the policy and each baseline on the validation window."""
    gate = version.gate or {}
    baselines: dict[str, Any] = gate.get("baselines") or {}
    table = Table(title=title or f"validation: {version.label} vs baselines (same costs)")
    table.add_column("metric")
    table.add_column(f"policy {version.label}", justify="right")
    for name in baselines:
        table.add_column(name.replace("_", " "), justify="right")
    metric = gate.get("metric")
    for key, label, kind in GATE_ROWS:
        marker = " *" if key == metric else ""
        table.add_row(
            label + marker,
            _fmt((gate.get("policy") or {}).get(key), kind),
            *(_fmt(m.get(key), kind) for m in baselines.values()),
        )
    return table


def gate_line(version: ModelVersion) -> str:
    """One line: the decision, the margin and the resulting status."""
    gate = version.gate or {}
    colour = {"promoted": "green", "rejected": "red"}.get(str(gate.get("decision")), "yellow")
    return (
        f"gate [{colour}]{gate.get('decision', 'not run')}[/{colour}] "
        f"(metric {gate.get('metric')}, margin {gate.get('margin')}): {gate.get('reason', '')}"
    )


def print_training(target: Console, result: TrainingResult) -> None:
    """A finished training run: status, model version, gate comparison, artifact paths."""
    from stocktrade.cli.backtest import display_uri

    run = result.run
    colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(
        run.status.value, "cyan"
    )
    target.print(f"run [bold]{run.id}[/bold] (train) [{colour}]{run.status.value}[/{colour}]")
    if run.message:
        target.print(f"  {run.message}", soft_wrap=True)
    metrics = run.metrics or {}
    if metrics.get("timesteps") is not None:
        target.print(
            f"  trained {metrics['timesteps']:,} steps in {metrics.get('train_seconds', 0):.1f} s "
            f"({metrics.get('fps', 0):,.0f} steps/s); ONNX parity max |logit diff| "
            f"{metrics.get('parity_max_abs_logit_diff', float('nan')):.2g}"
        )
    version = result.model_version
    if version is not None:
        for i, window in enumerate((version.gate or {}).get("windows") or []):
            target.print(
                f"  validation window {i + 1}: {window['start'][:10]} .. {window['end'][:10]} "
                f"({window['bars']} bars, {window['history_bars']} warm-up bars before it)"
            )
        target.print(gate_table(version))
        target.print(gate_line(version))
        target.print(
            f"model version [bold]{version.label}[/bold] id {version.id} "
            f"status {version.status.value}"
        )
    if run.artifacts:
        target.print("artifacts:")
        for name, uri in sorted(run.artifacts.items()):
            target.print(f"  {name:<16} {display_uri(uri)}", soft_wrap=True)


# -- models ------------------------------------------------------------------------------------


@models_app.command("list")
@handle_errors
def list_models(
    agent: str | None = typer.Option(None, "--agent", "-a", help="Only this agent's versions."),
    status: str | None = typer.Option(
        None, "--status", help="registered, promoted, rejected or retired."
    ),
    limit: int = typer.Option(50, "--limit", "-n", help="How many at most."),
) -> None:
    """Your model versions, by agent, newest first."""
    from stocktrade.cli.backtest import OWNER, container

    versions = container().models().list(agent_name=agent, status=status, owner=OWNER, limit=limit)
    table = Table(title=f"model versions ({len(versions)})")
    for col in ("agent", "version", "status", "created", "gate", "policy", "best baseline", "id"):
        table.add_column(col, overflow="fold")
    for v in versions:
        gate = v.gate or {}
        metric = gate.get("metric", "")
        kind = "pct" if metric in ("total_return", "cagr", "max_drawdown") else "ratio"
        table.add_row(
            v.agent_name,
            str(v.version),
            v.status.value,
            f"{v.created_at:%Y-%m-%d %H:%M}" if v.created_at else "",
            f"{gate.get('decision', '-')} ({metric})" if gate else "-",
            _fmt(gate.get("policy_value"), kind) if gate else "",
            f"{gate.get('best_baseline') or '-'} {_fmt(gate.get('best_baseline_value'), kind)}"
            if gate
            else "",
            v.id[:8],
        )
    console.print(table)


@models_app.command("show")
@handle_errors
def show_model(
    ref: str = typer.Argument(
        ..., help="Version id (or prefix), AGENT:VERSION, or AGENT (its promoted version)."
    ),
) -> None:
    """One model version: status, data range, gate comparison, files."""
    from stocktrade.cli.backtest import OWNER, container, display_uri

    v = container().models().resolve(ref, owner=OWNER)
    colour = {"promoted": "green", "rejected": "red", "retired": "yellow"}.get(
        v.status.value, "cyan"
    )
    console.print(
        f"model version [bold]{v.label}[/bold] [{colour}]{v.status.value}[/{colour}] id {v.id}"
    )
    m = v.manifest
    data = m.get("data") or {}
    console.print(
        f"  trained on {', '.join(data.get('symbols', []))} {data.get('timeframe', '')} "
        f"{data.get('start', '?')} .. {data.get('end', '?')}, seed {m.get('seed')}, "
        f"config hash {str(m.get('config_hash', ''))[:12]}"
    )
    created = f"{v.created_at:%Y-%m-%d %H:%M:%S}" if v.created_at else "?"
    promoted = f", promoted {v.promoted_at:%Y-%m-%d %H:%M:%S}" if v.promoted_at else ""
    console.print(f"  registered {created}{promoted}; run {v.run_id}")
    console.print(f"  onnx   {display_uri(v.uri_onnx)}  sha256 {v.sha256[:16]}...", soft_wrap=True)
    if v.uri_sb3:
        console.print(f"  sb3    {display_uri(v.uri_sb3)}", soft_wrap=True)
    if v.gate:
        console.print(gate_table(v))
        console.print(gate_line(v))
        manual = v.gate.get("manual_promotion")
        if manual:
            console.print(f"  promoted by hand at {manual.get('at')} (was {manual.get('from')})")


@models_app.command("promote")
@handle_errors
def promote_model(
    ref: str = typer.Argument(..., help="Version id (or prefix) or AGENT:VERSION."),
) -> None:
    """Promote a version by hand (e.g. roll back): it serves its agent, the current one retires."""
    from datetime import UTC, datetime

    from stocktrade.cli.backtest import OWNER, container
    from stocktrade.services.promotion import promote_version

    c = container()
    models = c.models()
    v = models.resolve(ref, owner=OWNER)
    if v.status.value == "promoted":
        console.print(f"{v.label} is already promoted")
        return
    now = datetime.now(UTC)
    gate = dict(v.gate or {})
    gate["manual_promotion"] = {
        "at": now.isoformat().replace("+00:00", "Z"),
        "by": OWNER,
        "from": v.status.value,
    }
    # Publishes now only where a bus is wired (Pub/Sub); else the outbox keeps the event.
    promoted, retired = promote_version(
        v.id, models=models, gate=gate, relay=c.training().relay, now=now
    )
    console.print(f"[green]{promoted.label} promoted[/green] (was {v.status.value})")
    for r in retired:
        console.print(f"  {r.label} retired")
