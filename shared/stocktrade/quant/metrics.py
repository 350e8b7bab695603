"""Performance metrics, numerically equal to empyrical(-reloaded) where it defines them.

Conventions:

* ``returns`` are simple (not log) per-period returns; 252 periods per year by default
  (``periods``); the risk-free rate and the Sortino required return default to 0 per period.
* Standard deviations are sample ones (ddof=1). NaN returns are skipped by means and
  standard deviations and count as a 0 return when compounding, as in empyrical; the number
  of years for CAGR is ``len(returns) / periods`` (NaN entries included, as in empyrical).
* Drawdowns are measured on the compounded equity curve starting at 1.0, which counts as
  the first peak (so a loss on the first bar is a drawdown). ``max_drawdown`` is <= 0
  (e.g. -0.25 for a 25 % fall), as in empyrical.

Metrics returned by :func:`compute_metrics` (every value a Python ``float``):

=========================  ==================================================================
``total_return``           ``prod(1 + r) - 1``; NaN if there are no returns
``cagr``                   ``(1 + total_return) ** (periods / n) - 1`` (empyrical
                           ``annual_return``/``cagr``); NaN if no returns or equity < 0
``annual_volatility``      ``std(r, ddof=1) * sqrt(periods)``; NaN with fewer than 2 returns
``sharpe``                 ``mean(r - rf) / std(r - rf, ddof=1) * sqrt(periods)``; NaN with
                           fewer than 2 returns; +/-inf (NaN for a zero mean) when every
                           return is equal (empyrical's zero-dispersion rule)
``sortino``                ``mean(r - req) * periods / downside_risk``; NaN with fewer than 2
                           returns; +inf when there is no downside and the mean is > 0
``downside_risk``          ``sqrt(mean(min(r - req, 0) ** 2)) * sqrt(periods)``
``max_drawdown``           lowest ``equity / running_peak - 1`` (<= 0); NaN if no returns
``max_drawdown_duration``  longest run of consecutive bars with equity below its running peak
                           (bars under water, whether or not the peak is regained); 0 if none
``calmar``                 ``cagr / |max_drawdown|``; NaN when there is no drawdown or the
                           ratio is infinite (empyrical ``calmar_ratio``)
``n_periods``              ``len(returns)``
``n_trades``               number of closed trades (0 when ``trade_pnls`` is None)
``win_rate``               share of trades with pnl > 0; NaN without trades
``profit_factor``          gross profit / gross loss; NaN without trades or when every
                           trade is 0, +inf when there are profits but no losing trade
``avg_trade``              mean trade pnl (in the pnl's currency); NaN without trades
``turnover``               ``sum(|traded_notional|) / mean(equity)``: multiples of the average
                           equity traded over the whole period; NaN without both inputs
``turnover_annual``        ``turnover * periods / len(returns)``
``exposure``               share of bars with a non-zero position (time in market); NaN
                           without ``exposure``
``avg_exposure``           ``mean(|exposure|)``; NaN without ``exposure``
=========================  ==================================================================

NaN and inf are ordinary floats (``json.dumps`` writes ``NaN``/``Infinity``); use
:func:`json_safe` to turn them into ``None`` before storing in strict JSON (Postgres jsonb).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from stocktrade.errors import ValidationError
from stocktrade.jit import njit

__all__ = [
    "METRIC_NAMES",
    "annual_volatility",
    "average_trade",
    "cagr",
    "calmar_ratio",
    "compute_metrics",
    "downside_risk",
    "exposure_time",
    "json_safe",
    "max_drawdown",
    "max_drawdown_duration",
    "profit_factor",
    "sharpe_ratio",
    "sortino_ratio",
    "total_return",
    "turnover",
    "win_rate",
]

PERIODS_PER_YEAR = 252

METRIC_NAMES: tuple[str, ...] = (
    "total_return",
    "cagr",
    "annual_volatility",
    "sharpe",
    "sortino",
    "downside_risk",
    "max_drawdown",
    "max_drawdown_duration",
    "calmar",
    "n_periods",
    "n_trades",
    "win_rate",
    "profit_factor",
    "avg_trade",
    "turnover",
    "turnover_annual",
    "exposure",
    "avg_exposure",
)


# --------------------------------------------------------------------------- kernels


@njit(cache=True, nogil=True)
def _return_stats(r: np.ndarray, rf: float, req: float) -> tuple[float, ...]:
    """One pass for sums, compounding and drawdowns; one pass for deviations.

    Returns (n_valid, mean, var_ddof1, mean_rf, var_rf, constant, mean_req, downside_ms,
    equity, max_dd, max_dd_duration).
    """
    n = r.shape[0]
    count = 0
    # Neumaier-compensated sum keeps the mean as accurate as numpy's pairwise sum.
    s = 0.0
    comp = 0.0
    lo = np.inf
    hi = -np.inf
    equity = 1.0
    peak = 1.0
    max_dd = 0.0
    run = 0
    max_run = 0
    for i in range(n):
        x = r[i]
        if x == x:
            count += 1
            t = s + x
            if abs(s) >= abs(x):
                comp += (s - t) + x
            else:
                comp += (x - t) + s
            s = t
            if x < lo:
                lo = x
            if x > hi:
                hi = x
            equity = equity * (1.0 + x)
        if equity > peak:
            peak = equity
        dd = (equity - peak) / peak
        if dd < max_dd:
            max_dd = dd
        if equity < peak:
            run += 1
            if run > max_run:
                max_run = run
        else:
            run = 0
    if count == 0:
        nan = np.nan
        return (0.0, nan, nan, nan, nan, 0.0, nan, nan, equity, max_dd, float(max_run))
    mean = (s + comp) / count
    mean_rf = mean - rf
    mean_req = mean - req
    ss = 0.0
    ss_rf = 0.0
    down = 0.0
    for i in range(n):
        x = r[i]
        if x == x:
            d = x - mean
            ss += d * d
            a = (x - rf) - mean_rf
            ss_rf += a * a
            b = x - req
            if b < 0.0:
                down += b * b
    var = ss / (count - 1) if count > 1 else np.nan
    var_rf = ss_rf / (count - 1) if count > 1 else np.nan
    constant = 1.0 if lo == hi else 0.0
    return (
        float(count),
        mean,
        var,
        mean_rf,
        var_rf,
        constant,
        mean_req,
        down / count,
        equity,
        max_dd,
        float(max_run),
    )


@njit(cache=True, nogil=True)
def _trade_stats(p: np.ndarray) -> tuple[float, float, float, float]:
    """(n_trades, n_winners, gross_profit, gross_loss) over finite pnls."""
    n = 0
    wins = 0
    gp = 0.0
    gl = 0.0
    for i in range(p.shape[0]):
        x = p[i]
        if x == x:
            n += 1
            if x > 0.0:
                wins += 1
                gp += x
            elif x < 0.0:
                gl -= x
    return float(n), float(wins), gp, gl


@njit(cache=True, nogil=True)
def _sum_abs(x: np.ndarray) -> float:
    s = 0.0
    for i in range(x.shape[0]):
        v = x[i]
        if v == v:
            s += abs(v)
    return s


@njit(cache=True, nogil=True)
def _exposure_stats(x: np.ndarray) -> tuple[float, float]:
    """(share of bars with non-zero position, mean |position|) over finite entries."""
    n = 0
    nz = 0
    s = 0.0
    for i in range(x.shape[0]):
        v = x[i]
        if v == v:
            n += 1
            if v != 0.0:
                nz += 1
                s += abs(v)
    if n == 0:
        return np.nan, np.nan
    return nz / n, s / n


# --------------------------------------------------------------------------- helpers


def _as_1d(values: Any, name: str) -> np.ndarray:
    try:
        arr = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValidationError(f"{name} must be numeric; could not convert: {e}") from e
    if arr.ndim != 1:
        raise ValidationError(f"{name} must be 1-D; found shape {arr.shape}")
    return arr


def _as_returns(values: Any) -> np.ndarray:
    r = _as_1d(values, "returns")
    inf = np.isinf(r)
    if inf.any():
        i = int(np.argmax(inf))
        raise ValidationError(
            f"returns must be finite (or NaN for missing); found {r[i]} at index {i}"
        )
    return r


def _check_periods(periods: Any) -> float:
    try:
        p = float(periods)
    except (TypeError, ValueError) as e:
        raise ValidationError(f"periods must be a number > 0; found {periods!r}") from e
    if not (math.isfinite(p) and p > 0):
        raise ValidationError(f"periods must be finite and > 0; found {periods!r}")
    return p


def _cagr_from(equity: float, n: int, periods: float) -> float:
    if n < 1 or not math.isfinite(equity) or equity < 0.0:
        return math.nan
    return float(equity ** (periods / n) - 1.0)


def _ratio(num: float, den: float) -> float:
    """num / den with IEEE semantics (x/0 -> +/-inf, 0/0 -> NaN), as numpy would give."""
    if math.isnan(num) or math.isnan(den):
        return math.nan
    if den == 0.0:
        if num == 0.0:
            return math.nan
        return math.copysign(math.inf, num) * math.copysign(1.0, den)
    return num / den


def _calmar(cagr_value: float, max_dd: float) -> float:
    if not max_dd < 0.0:
        return math.nan
    value = cagr_value / abs(max_dd)
    return math.nan if math.isinf(value) else value


# --------------------------------------------------------------------------- single metrics


def total_return(returns: Any) -> float:
    """Compounded return ``prod(1 + r) - 1`` (NaN entries count as 0); NaN if empty."""
    r = _as_returns(returns)
    if r.shape[0] == 0:
        return math.nan
    return float(_return_stats(r, 0.0, 0.0)[8] - 1.0)


def cagr(returns: Any, periods: float = PERIODS_PER_YEAR) -> float:
    """Compound annual growth rate (empyrical ``annual_return``)."""
    r = _as_returns(returns)
    p = _check_periods(periods)
    if r.shape[0] == 0:
        return math.nan
    return _cagr_from(_return_stats(r, 0.0, 0.0)[8], r.shape[0], p)


def annual_volatility(returns: Any, periods: float = PERIODS_PER_YEAR) -> float:
    """Sample std of returns times ``sqrt(periods)``; NaN with fewer than 2 returns."""
    r = _as_returns(returns)
    p = _check_periods(periods)
    if r.shape[0] < 2:
        return math.nan
    return float(math.sqrt(_return_stats(r, 0.0, 0.0)[2]) * math.sqrt(p))


def sharpe_ratio(returns: Any, risk_free: float = 0.0, periods: float = PERIODS_PER_YEAR) -> float:
    """Annualised Sharpe ratio (empyrical ``sharpe_ratio``); see the module table."""
    return _sharpe_from(_as_returns(returns), float(risk_free), _check_periods(periods))


def _sharpe_from(r: np.ndarray, rf: float, p: float) -> float:
    if r.shape[0] < 2:
        return math.nan
    st = _return_stats(r, rf, 0.0)
    std = 0.0 if st[5] == 1.0 else math.sqrt(st[4])
    return _ratio(st[3], std) * math.sqrt(p)


def downside_risk(
    returns: Any, required_return: float = 0.0, periods: float = PERIODS_PER_YEAR
) -> float:
    """Annualised root-mean-square of returns below ``required_return`` (empyrical)."""
    r = _as_returns(returns)
    p = _check_periods(periods)
    if r.shape[0] < 1:
        return math.nan
    return float(math.sqrt(_return_stats(r, 0.0, float(required_return))[7]) * math.sqrt(p))


def sortino_ratio(
    returns: Any, required_return: float = 0.0, periods: float = PERIODS_PER_YEAR
) -> float:
    """Annualised Sortino ratio (empyrical ``sortino_ratio``); see the module table."""
    r = _as_returns(returns)
    p = _check_periods(periods)
    if r.shape[0] < 2:
        return math.nan
    st = _return_stats(r, 0.0, float(required_return))
    return _ratio(st[6] * p, math.sqrt(st[7]) * math.sqrt(p))


def max_drawdown(returns: Any) -> float:
    """Lowest ``equity / running_peak - 1`` (<= 0); NaN if there are no returns."""
    r = _as_returns(returns)
    if r.shape[0] == 0:
        return math.nan
    return float(_return_stats(r, 0.0, 0.0)[9])


def max_drawdown_duration(returns: Any) -> float:
    """Longest run of consecutive bars with equity below its running peak (0 if none)."""
    r = _as_returns(returns)
    return float(_return_stats(r, 0.0, 0.0)[10])


def calmar_ratio(returns: Any, periods: float = PERIODS_PER_YEAR) -> float:
    """CAGR over ``|max_drawdown|``; NaN without a drawdown (empyrical ``calmar_ratio``)."""
    r = _as_returns(returns)
    p = _check_periods(periods)
    if r.shape[0] == 0:
        return math.nan
    st = _return_stats(r, 0.0, 0.0)
    return _calmar(_cagr_from(st[8], r.shape[0], p), st[9])


def win_rate(trade_pnls: Any) -> float:
    """Share of trades with pnl > 0; NaN without trades."""
    n, wins, _, _ = _trade_stats(_as_1d(trade_pnls, "trade_pnls"))
    return wins / n if n > 0 else math.nan


def profit_factor(trade_pnls: Any) -> float:
    """Gross profit / gross loss; NaN without trades or profits, +inf without losses."""
    n, _, gp, gl = _trade_stats(_as_1d(trade_pnls, "trade_pnls"))
    if n == 0:
        return math.nan
    return _ratio(gp, gl)


def average_trade(trade_pnls: Any) -> float:
    """Mean pnl per trade; NaN without trades."""
    p = _as_1d(trade_pnls, "trade_pnls")
    p = p[~np.isnan(p)]
    return float(p.mean()) if p.shape[0] else math.nan


def turnover(traded_notional: Any, equity: Any) -> float:
    """``sum(|traded_notional|) / mean(equity)``: multiples of average equity traded."""
    tn = _as_1d(traded_notional, "traded_notional")
    eq = _as_1d(equity, "equity")
    eq = eq[~np.isnan(eq)]
    if eq.shape[0] == 0:
        return math.nan
    return _ratio(_sum_abs(tn), float(eq.mean()))


def exposure_time(exposure: Any) -> float:
    """Share of bars with a non-zero position (time in market); NaN if empty."""
    return float(_exposure_stats(_as_1d(exposure, "exposure"))[0])


def json_safe(metrics: dict[str, float]) -> dict[str, float | None]:
    """Copy of ``metrics`` with NaN and +/-inf replaced by None (strict JSON, jsonb)."""
    return {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}


# --------------------------------------------------------------------------- the suite


def compute_metrics(
    returns: Any,
    *,
    trade_pnls: Any = None,
    traded_notional: Any = None,
    equity: Any = None,
    exposure: Any = None,
    periods: float = PERIODS_PER_YEAR,
    risk_free: float = 0.0,
) -> dict[str, float]:
    """Every metric in :data:`METRIC_NAMES`, from one pass over the returns.

    Args:
        returns: Simple per-period returns of the strategy (1-D).
        trade_pnls: Pnl of each closed trade, for win rate, profit factor, average trade.
        traded_notional: Per-bar traded notional (absolute currency), for turnover.
        equity: Per-bar equity (currency), for turnover.
        exposure: Per-bar position (status -1/0/1 or fraction of equity), for exposure.
        periods: Periods per year (252 for daily bars).
        risk_free: Risk-free return per period, for the Sharpe ratio.

    Returns:
        ``{name: float}`` in :data:`METRIC_NAMES` order; see the module table for when a
        value is NaN or infinite.

    Raises:
        ValidationError: An input is not a 1-D numeric array, or ``periods`` is not > 0.
    """
    r = _as_returns(returns)
    p = _check_periods(periods)
    rf = float(risk_free)
    n = r.shape[0]
    nan = math.nan
    (_count, _mean, var, mean_rf, var_rf, constant, mean_req, down_ms, eq_end, max_dd, dd_run) = (
        _return_stats(r, rf, 0.0)
    )
    sqrt_p = math.sqrt(p)
    if n >= 2:
        std_rf = 0.0 if constant == 1.0 else math.sqrt(var_rf)
        sharpe = _ratio(mean_rf, std_rf) * sqrt_p
        vol = math.sqrt(var) * sqrt_p
        dr = math.sqrt(down_ms) * sqrt_p
        sortino = _ratio(mean_req * p, dr)
    else:
        sharpe = vol = sortino = nan
        dr = math.sqrt(down_ms) * sqrt_p if n == 1 else nan
    growth = _cagr_from(eq_end, n, p)
    out: dict[str, float] = {
        "total_return": float(eq_end - 1.0) if n else nan,
        "cagr": growth,
        "annual_volatility": float(vol),
        "sharpe": float(sharpe),
        "sortino": float(sortino),
        "downside_risk": float(dr),
        "max_drawdown": float(max_dd) if n else nan,
        "max_drawdown_duration": float(dd_run),
        "calmar": _calmar(growth, max_dd) if n else nan,
        "n_periods": float(n),
    }

    if trade_pnls is not None:
        tp = _as_1d(trade_pnls, "trade_pnls")
        n_tr, wins, gp, gl = _trade_stats(tp)
    else:
        tp = None
        n_tr, wins, gp, gl = 0.0, 0.0, 0.0, 0.0
    out["n_trades"] = float(n_tr)
    if n_tr > 0 and tp is not None:
        out["win_rate"] = wins / n_tr
        out["profit_factor"] = _ratio(gp, gl)
        out["avg_trade"] = float(np.nanmean(tp))
    else:
        out["win_rate"] = out["profit_factor"] = out["avg_trade"] = nan

    if traded_notional is not None and equity is not None:
        to = turnover(traded_notional, equity)
        out["turnover"] = to
        out["turnover_annual"] = to * p / n if n else nan
    else:
        out["turnover"] = out["turnover_annual"] = nan

    if exposure is not None:
        share, gross = _exposure_stats(_as_1d(exposure, "exposure"))
        out["exposure"] = float(share)
        out["avg_exposure"] = float(gross)
    else:
        out["exposure"] = out["avg_exposure"] = nan
    return out
