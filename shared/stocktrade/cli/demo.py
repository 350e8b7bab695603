"""``stocktrade demo``: the main job on the embedded defaults, end to end."""

from __future__ import annotations

import importlib
from pathlib import Path

import typer

from stocktrade.cli import handle_errors
from stocktrade.cli.common import connection, console

DEFAULT_DATA = Path("../shared/data")
# Two files whose symbols do not overlap: bars are keyed (symbol, timeframe, ts), so a
# second source for the same symbol (e.g. the Kaggle long history, adjusted differently)
# would overwrite the first. Import such files on purpose, with `stocktrade data import`.
DEMO_FILES = ("daily_us_stocks_stocknet.csv", "daily_indices_arch.csv")


# Later stages of the main job, in order: each module has run(console).
_STEPS = (
    ("2. backtest the baselines", "stocktrade.cli.demo_backtest"),
    ("3. train a PPO agent, export it, gate it", "stocktrade.cli.demo_train"),
    ("4. paper-trade through the live chain", "stocktrade.cli.demo_chain"),
)


@handle_errors
def demo(
    data: Path = typer.Option(DEFAULT_DATA, help="A bar CSV file or a folder holding the demo files."),
) -> None:
    """Start Postgres, import real bars, backtest, train, paper-trade: the main job."""
    from stocktrade.adapters.postgres.bars import PostgresBarRepository
    from stocktrade.cli.data import print_summary
    from stocktrade.errors import ValidationError
    from stocktrade.services.market_data import import_bar_files

    if data.is_dir():
        files = [data / name for name in DEMO_FILES if (data / name).exists()]
        if not files:
            raise ValidationError(f"{data}: none of {', '.join(DEMO_FILES)} found; pass --data FILE")
    else:
        files = [data]
    conn = connection()
    repo = PostgresBarRepository(conn)
    console.rule("[bold]1. market data")
    reports = import_bar_files(repo, files)
    for r in reports:
        console.print(f"{Path(r.path).name}: {r.rows:,} rows, {r.symbols} symbols -> "
                      f"{r.counts.inserted:,} new, {r.counts.updated:,} changed, "
                      f"{r.counts.unchanged:,} unchanged ({r.bars_per_second:,.0f} bars/s)")
    print_summary(repo, limit=25)
    for title, module_name in _STEPS:
        console.rule(f"[bold]{title}")
        module = importlib.import_module(module_name)
        module.run(console)
