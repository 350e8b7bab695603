"""The agents' leaderboard: return, Sharpe, max drawdown and trades from their equity curves.

The metrics are :func:`stocktrade.quant.metrics.compute_metrics` over the agent's equity
snapshots, prepared exactly as :attr:`stocktrade.backtest.result.BacktestResult.metrics`
prepares a backtest's portfolio curve (per-bar simple returns, the first against the
starting cash; exposure = |position value| / equity; traded notional per bar), so a chain
agent and a backtest of the same strategy over the same bars score the same.

The ledger projection (``on_fill``) refreshes an agent's row after its fills;
:func:`refresh_leaderboard` recomputes every agent's (CLI, cron, end of a replay).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID

import numpy as np

from stocktrade.quant.metrics import compute_metrics
from stocktrade.services.agents import AgentConfig

__all__ = ["LeaderboardStore", "leaderboard_row", "refresh_leaderboard", "show_leaderboard"]


class LeaderboardStore(Protocol):
    """Leaderboard storage (``PostgresChainStore``)."""

    def refresh_leaderboard(self, agent_ids: Iterable[UUID]) -> list[dict[str, Any]]: ...

    def leaderboard(self, *, owner: str | None = None) -> list[dict[str, Any]]: ...


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def leaderboard_row(
    agent: AgentConfig,
    curve: Sequence[tuple[datetime, Decimal, Decimal]],
    trade_pnls: Sequence[float],
    notional: Mapping[datetime, float],
    n_fills: int,
    periods: float,
) -> dict[str, Any]:
    """One agent's leaderboard row.

    Args:
        agent: the agent (its starting cash is the first return's base).
        curve: ``(ts, positions_value, equity)`` equity snapshots in time order.
        trade_pnls: net P&L of each closed FIFO trade, by exit time.
        notional: traded notional per fill time.
        n_fills: fills so far.
        periods: bars per year of the agent's timeframe.

    Returns:
        ``agent_id, total_return, sharpe, max_drawdown, trades, equity, metrics (JSON-safe,
        non-finite values as null), n_fills, as_of``.
    """
    init = float(agent.initial_cash)
    if curve:
        equity = np.array([float(e) for _t, _v, e in curve], dtype=np.float64)
        value = np.array([float(v) for _t, v, _e in curve], dtype=np.float64)
        prev = np.concatenate(([init], equity[:-1]))
        with np.errstate(divide="ignore", invalid="ignore"):
            returns = equity / prev - 1.0
            exposure = np.where(equity != 0, np.abs(value) / np.abs(equity), 0.0)
        traded = np.array([notional.get(t, 0.0) for t, _v, _e in curve], dtype=np.float64)
        metrics = compute_metrics(
            returns,
            trade_pnls=np.asarray(trade_pnls, dtype=np.float64),
            traded_notional=traded,
            equity=equity,
            exposure=exposure,
            periods=periods,
        )
        last_equity: Decimal = curve[-1][2]
        as_of: datetime | None = curve[-1][0]
    else:
        metrics = {}
        last_equity = agent.initial_cash
        as_of = None
    return {
        "agent_id": agent.id,
        "name": agent.name,
        "total_return": metrics.get("total_return", 0.0 if not curve else math.nan),
        "sharpe": metrics.get("sharpe", math.nan),
        "max_drawdown": metrics.get("max_drawdown", math.nan),
        "trades": len(trade_pnls),
        "equity": last_equity,
        "metrics": {k: _finite(v) for k, v in metrics.items()},
        "n_fills": int(n_fills),
        "as_of": as_of,
    }


def refresh_leaderboard(store: LeaderboardStore, agent_ids: Iterable[UUID]) -> list[dict[str, Any]]:
    """Recompute and store these agents' rows (e.g. every agent, after a replay)."""
    return store.refresh_leaderboard(agent_ids)


def show_leaderboard(store: LeaderboardStore, *, owner: str | None = None) -> list[dict[str, Any]]:
    """Leaderboard rows with agent names, best total return first."""
    return store.leaderboard(owner=owner)
