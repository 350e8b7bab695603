"""``stocktrade data``: import bar files and look at what is stored."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from stocktrade.cli import handle_errors
from stocktrade.cli.common import connection, console, err_console

app = typer.Typer(help="Import and query market data (bars).", no_args_is_help=True)


def _timeframe(value: str | None):  # -> Timeframe | None
    from stocktrade.domain.bars import Timeframe
    from stocktrade.errors import ValidationError

    if value is None:
        return None
    try:
        return Timeframe.parse(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc


@app.command("import")
@handle_errors
def import_(
    files: list[Path] = typer.Argument(..., help="CSV bar files or folders of them."),
    timeframe: str | None = typer.Option(None, help="Force a timeframe (1m, 5m, 15m, 1h, 1d); "
                                         "default: inferred per symbol from the timestamps."),
    source: str | None = typer.Option(None, help="Source label stored with each bar (default: file name)."),
) -> None:
    """Validate and upsert bar files; a bad file is rejected whole with file, line and reason."""
    from stocktrade.adapters.postgres.bars import PostgresBarRepository
    from stocktrade.services.market_data import import_bar_files

    tf = _timeframe(timeframe)
    repo = PostgresBarRepository(connection())
    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                        TimeRemainingColumn(), console=err_console, transient=True)
    with progress:
        task = progress.add_task("import", total=1)

        def on_file(path: Path, size: int) -> None:
            progress.update(task, description=f"import {path.name}", total=size, completed=0)

        reports = import_bar_files(repo, files, timeframe=tf, source=source, on_file=on_file,
                                   on_bytes=lambda n: progress.update(task, completed=n))
    table = Table(title="imported")
    for col in ("file", "rows", "symbols", "inserted", "updated", "unchanged", "bars/s"):
        table.add_column(col, justify="right" if col != "file" else "left")
    for r in reports:
        table.add_row(Path(r.path).name, f"{r.rows:,}", str(r.symbols), f"{r.counts.inserted:,}",
                      f"{r.counts.updated:,}", f"{r.counts.unchanged:,}", f"{r.bars_per_second:,.0f}")
    console.print(table)


@app.command("summary")
@handle_errors
def summary(
    symbol: list[str] = typer.Option(None, "--symbol", "-s", help="Only these symbols (repeatable)."),
) -> None:
    """Per symbol and timeframe: date range, bar count and a few statistics."""
    from stocktrade.adapters.postgres.bars import PostgresBarRepository

    print_summary(PostgresBarRepository(connection()), symbol or None)


def print_summary(repo, symbols: list[str] | None = None, limit: int | None = None) -> None:
    """Render the stored-bars summary as a table."""
    rows = repo.summary(symbols)
    table = Table(title=f"stored bars ({sum(r.bars for r in rows):,} bars, "
                  f"{len({r.symbol for r in rows})} symbols)")
    for col in ("symbol", "tf", "from", "to", "bars", "first close", "last close", "return",
                "low", "high", "avg volume"):
        table.add_column(col, justify="left" if col in ("symbol", "tf") else "right")
    shown = rows if limit is None else rows[:limit]
    for r in shown:
        fmt = "%Y-%m-%d" if r.timeframe == "1d" else "%Y-%m-%d %H:%M"
        ret = r.last_close / r.first_close - 1 if r.first_close else float("nan")
        table.add_row(r.symbol, r.timeframe, r.first.strftime(fmt), r.last.strftime(fmt),
                      f"{r.bars:,}", f"{r.first_close:,.2f}", f"{r.last_close:,.2f}",
                      f"{ret:+.1%}", f"{r.min_low:,.2f}", f"{r.max_high:,.2f}", f"{r.mean_volume:,.0f}")
    if limit is not None and len(rows) > limit:
        table.caption = f"... {len(rows) - limit} more rows (stocktrade data summary)"
    console.print(table)


@app.command("query")
@handle_errors
def query(
    symbol: str = typer.Argument(..., help="Symbol, e.g. AAPL."),
    timeframe: str = typer.Option("1d", help="Timeframe."),
    start: datetime | None = typer.Option(None, "--from", help="First timestamp (inclusive, UTC)."),
    end: datetime | None = typer.Option(None, "--to", help="Last timestamp (inclusive, UTC)."),
    csv: bool = typer.Option(False, "--csv", help="Print CSV instead of a table head/tail."),
) -> None:
    """Range query one symbol's bars."""
    import time

    from stocktrade.adapters.postgres.bars import PostgresBarRepository
    from stocktrade.domain.bars import Timeframe

    repo = PostgresBarRepository(connection())
    started = time.perf_counter()
    bars = repo.load(symbol, Timeframe.parse(timeframe).value, _utc(start), _utc(end))
    elapsed = time.perf_counter() - started
    frame = bars.to_frame()
    if csv:
        typer.echo(frame.to_csv(index_label="timestamp"), nl=False)
        return
    console.print(frame.head(5).to_string())
    if len(frame) > 10:
        console.print("...")
        console.print(frame.tail(5).to_string(header=False))
    console.print(f"{len(frame):,} bars in {elapsed * 1000:.1f} ms")


def _utc(value: datetime | None) -> datetime | None:
    from datetime import UTC

    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
