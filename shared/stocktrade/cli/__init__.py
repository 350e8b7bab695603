"""The ``stocktrade`` command line.

Human output goes to stdout; structured JSON logs go to stderr (``--log-level``), so a
command's output can be piped. Errors print one clear line and exit non-zero:
2 for rejected input, 1 for anything else.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer

from stocktrade.errors import StocktradeError, ValidationError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="stocktrade",
    help="Train, backtest and paper-trade reinforcement-learning trading agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def handle_errors(func: F) -> F:
    """Turn StocktradeError into one line on stderr and a non-zero exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except StocktradeError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2 if isinstance(exc, ValidationError) else 1) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def _root(
    log_level: str = typer.Option("WARNING", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
) -> None:
    """stocktrade command line."""
    from stocktrade.logging import configure_logging

    configure_logging(log_level, stream=sys.stderr)


def _register() -> None:
    from stocktrade.cli import data, db, demo

    app.add_typer(data.app, name="data")
    app.add_typer(db.app, name="db")
    app.command("demo")(demo.demo)
    for module_name in ("backtest", "train", "chain"):
        try:
            module = __import__(f"stocktrade.cli.{module_name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"stocktrade.cli.{module_name}":
                raise
            continue
        module.register(app)


def main() -> None:
    """Console-script entry point."""
    _register()
    app()


if __name__ == "__main__":
    main()
