"""Backtest artifacts in the object store, under ``runs/<run_id>/``.

The layout users of the StockBot backend relied on, one folder per run:

==================  ===============================================================================
``equity.csv``      portfolio per bar: ``ts, cash, position_value, equity`` (float64 curves)
``orders.csv``      every order: id, symbol, decision time, side, qty, target, status, reason,
                    fill time and price, fee, risk codes (money exact, from the Decimal ledger)
``trades.csv``      closed FIFO round trips: entry/exit time and price, fees, P&L, return,
                    holding time (ISO 8601 duration, ``P14DT0H0M0S``)
``metrics.json``    ``{"metrics": {...}, "by_symbol": {...}, "strategy": ..., "params": ...}``;
                    money (initial cash, final equity, fees, realised P&L) written exactly;
                    NaN/inf as ``null``
``config.yaml``     the merged config snapshot (request, resolved strategy parameters, engine
                    config, data ranges, package versions): enough to run it again
``report.html``     the self-contained report (:mod:`stocktrade.backtest.report`)
``job.log``         the job's output (written by the launcher or the job, not here)
==================  ===============================================================================

Times in the CSV files are ISO 8601 UTC (``2014-01-02T00:00:00Z``), like the bar files.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, localcontext
from typing import TYPE_CHECKING, Any

from stocktrade.domain.ledger import LEDGER_CONTEXT
from stocktrade.domain.runs import dumps_json
from stocktrade.quant.metrics import json_safe

if TYPE_CHECKING:
    import pandas as pd

    from stocktrade.backtest.result import BacktestResult
    from stocktrade.ports import ObjectStore

__all__ = [
    "ARTIFACT_FILES",
    "artifact_key",
    "metrics_document",
    "money_summary",
    "run_prefix",
    "stored_metrics",
    "write_backtest_artifacts",
]

#: Files a backtest writes, in writing order (``job.log`` comes from the launcher or job).
ARTIFACT_FILES = (
    "equity.csv",
    "orders.csv",
    "trades.csv",
    "metrics.json",
    "config.yaml",
    "report.html",
)
_CONTENT_TYPES = {
    ".csv": "text/csv; charset=utf-8",
    ".json": "application/json",
    ".yaml": "application/yaml",
    ".html": "text/html; charset=utf-8",
    ".log": "text/plain; charset=utf-8",
}
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def run_prefix(run_id: str) -> str:
    """Object-key folder of a run: ``runs/<run_id>/``."""
    return f"runs/{run_id}/"


def artifact_key(run_id: str, name: str) -> str:
    """Object key of one artifact of a run."""
    return run_prefix(run_id) + name


def content_type(name: str) -> str:
    """MIME type of an artifact file name."""
    for suffix, kind in _CONTENT_TYPES.items():
        if name.endswith(suffix):
            return kind
    return "application/octet-stream"


def money_summary(result: BacktestResult) -> dict[str, Decimal]:
    """Exact money of a result: initial cash, final equity, fees paid, realised P&L."""
    with localcontext(LEDGER_CONTEXT):
        fees = sum((f.fee for f in result.fills), Decimal(0))
    return {
        "initial_cash": result.initial_cash,
        "final_equity": result.final_equity,
        "total_fees": fees,
        "realised_pnl": result.realised_pnl,
    }


def stored_metrics(result: BacktestResult) -> dict[str, Any]:
    """The run's metrics: floats (NaN/inf -> None) with the money keys exact ``Decimal``."""
    out: dict[str, Any] = dict(json_safe(result.metrics))
    out.update(money_summary(result))
    return out


def metrics_document(result: BacktestResult) -> dict[str, Any]:
    """What ``metrics.json`` holds: portfolio metrics, per-symbol results, strategy."""
    by_symbol: dict[str, Any] = {}
    for symbol, book in result.books.items():
        final = book.final_equity
        init = book.initial_cash
        by_symbol[symbol] = {
            "initial_cash": init,
            "final_equity": final,
            "total_return": float(final / init - 1) if init else None,
            "n_trades": len(book.trades),
            "n_fills": len(book.fills),
            "fees": sum((f.fee for f in book.fills), Decimal(0)),
            "bars": len(book.ts),
        }
    return {
        "strategy": result.strategy_name,
        "params": result.strategy_params,
        "engine_path": result.path,
        "periods_per_year": result.periods_per_year,
        "metrics": stored_metrics(result),
        "by_symbol": by_symbol,
    }


def _csv(frame: pd.DataFrame) -> bytes:
    """CSV bytes with ISO 8601 UTC times; Decimal cells are written exactly (``str``)."""
    import pandas as pd

    out = frame.copy()
    for column in out.columns:
        series = out[column]
        if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(
            series
        ):
            out[column] = series.dt.strftime(_TIME_FORMAT)
        elif pd.api.types.is_timedelta64_dtype(series):
            out[column] = series.map(lambda v: "" if pd.isna(v) else v.isoformat())
    return out.to_csv(index=False, lineterminator="\n").encode("utf-8")


def write_backtest_artifacts(
    store: ObjectStore,
    run_id: str,
    result: BacktestResult,
    *,
    config_snapshot: Mapping[str, Any],
    title: str | None = None,
    subtitle: str = "",
) -> dict[str, str]:
    """Write every artifact of a finished backtest; return artifact name -> URI.

    Args:
        store: the object store.
        run_id: the run (files go under ``runs/<run_id>/``).
        result: the engine's result.
        config_snapshot: the merged config, JSON-safe (goes into ``config.yaml`` and the report).
        title: report title (default: strategy and symbols).
        subtitle: report subtitle.
    """
    import yaml

    from stocktrade.backtest.report import render_backtest_report

    frames = result.to_frames()
    trades = frames["trades"]
    document = metrics_document(result)
    payloads: dict[str, bytes] = {
        "equity.csv": _csv(frames["equity"]),
        "orders.csv": _csv(frames["orders"]),
        "trades.csv": _csv(trades),
        "metrics.json": (dumps_json(document) + "\n").encode("utf-8"),
        "config.yaml": yaml.safe_dump(
            _yaml_safe(config_snapshot), sort_keys=False, allow_unicode=True
        ).encode("utf-8"),
    }
    heading = title or f"Backtest {result.strategy_name}: {', '.join(result.books)}"
    payloads["report.html"] = render_backtest_report(
        result,
        title=heading,
        config=config_snapshot,
        metrics=document["metrics"],
        subtitle=subtitle,
    ).encode("utf-8")
    uris = {}
    for name in ARTIFACT_FILES:
        uris[name] = store.put_bytes(artifact_key(run_id, name), payloads[name], content_type(name))
    return uris


def _yaml_safe(value: Any) -> Any:
    """Plain YAML types only (Decimal and datetimes as strings, NaN as null)."""
    import math

    if isinstance(value, Mapping):
        return {str(k): _yaml_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_yaml_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)
