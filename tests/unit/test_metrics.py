"""Metrics: equal to empyrical on real returns; hand-checked trade and exposure metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stocktrade.errors import ValidationError
from stocktrade.quant.metrics import (
    METRIC_NAMES,
    calmar_ratio,
    compute_metrics,
    downside_risk,
    json_safe,
    max_drawdown,
    max_drawdown_duration,
    profit_factor,
    sharpe_ratio,
    sortino_ratio,
    turnover,
    win_rate,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LONG_HISTORY = DATA / "daily_us_long_history_kaggle.csv"
RTOL = 1e-9


@pytest.fixture(scope="module")
def real_returns() -> dict[str, np.ndarray]:
    """Daily simple close-to-close returns of AAPL, MSFT and SPY (real data)."""
    if not LONG_HISTORY.exists():
        pytest.skip(f"real data not found at {LONG_HISTORY}")
    frame = pd.read_csv(LONG_HISTORY)
    out = {}
    for sym in ("AAPL", "MSFT", "SPY"):
        close = frame.loc[frame["symbol"] == sym, "close"].to_numpy(np.float64)
        out[sym] = close[1:] / close[:-1] - 1.0
    return out


def _empyrical_reference(ep, r, periods: int = 252, risk_free: float = 0.0) -> dict[str, float]:
    return {
        "total_return": ep.cum_returns_final(r),
        "cagr": ep.cagr(r, annualization=periods),
        "annual_volatility": ep.annual_volatility(r, annualization=periods),
        "sharpe": ep.sharpe_ratio(r, risk_free=risk_free, annualization=periods),
        "sortino": ep.sortino_ratio(r, annualization=periods),
        "downside_risk": ep.downside_risk(r, annualization=periods),
        "max_drawdown": ep.max_drawdown(r),
        "calmar": ep.calmar_ratio(r, annualization=periods),
    }


def _assert_matches(ours: dict[str, float], ref: dict[str, float]) -> None:
    for name, expected in ref.items():
        expected = float(expected)
        if math.isnan(expected):
            assert math.isnan(ours[name]), name
        else:
            assert ours[name] == pytest.approx(expected, rel=RTOL, abs=1e-12), name


@pytest.mark.parametrize("symbol", ["AAPL", "MSFT", "SPY"])
def test_metrics_equal_empyrical_on_real_daily_returns(real_returns, symbol):
    ep = pytest.importorskip("empyrical", reason="empyrical-reloaded is not installed")
    r = real_returns[symbol]
    _assert_matches(compute_metrics(r), _empyrical_reference(ep, r))
    assert max_drawdown(r) == pytest.approx(float(ep.max_drawdown(r)), rel=RTOL)
    assert calmar_ratio(r) == pytest.approx(float(ep.calmar_ratio(r)), rel=RTOL)


def test_metrics_equal_empyrical_with_nans_risk_free_and_weekly_periods(real_returns):
    ep = pytest.importorskip("empyrical", reason="empyrical-reloaded is not installed")
    r = real_returns["SPY"].copy()
    r[[0, 17, 500, 2000]] = np.nan
    ours = compute_metrics(r, periods=52, risk_free=0.0001)
    _assert_matches(ours, _empyrical_reference(ep, r, periods=52, risk_free=0.0001))
    assert sharpe_ratio(r, 0.0001, 52) == pytest.approx(ours["sharpe"], rel=1e-15)


def test_sortino_and_downside_risk_with_a_required_return_equal_empyrical(real_returns):
    ep = pytest.importorskip("empyrical", reason="empyrical-reloaded is not installed")
    r = real_returns["MSFT"]
    assert sortino_ratio(r, 0.001) == pytest.approx(ep.sortino_ratio(r, 0.001), rel=RTOL)
    assert downside_risk(r, 0.001) == pytest.approx(ep.downside_risk(r, 0.001), rel=RTOL)


def test_degenerate_series_follow_empyrical(real_returns):
    ep = pytest.importorskip("empyrical", reason="empyrical-reloaded is not installed")
    for r in (np.array([0.01]), np.full(10, 0.002), np.array([0.01, 0.02, 0.03])):
        _assert_matches(compute_metrics(r), _empyrical_reference(ep, r))


def test_empty_returns_give_nan_metrics():
    m = compute_metrics(np.array([]))
    for name in ("total_return", "cagr", "annual_volatility", "sharpe", "max_drawdown", "calmar"):
        assert math.isnan(m[name]), name
    assert m["n_periods"] == 0.0 and m["max_drawdown_duration"] == 0.0


def test_every_metric_is_a_python_float_in_the_documented_order():
    r = np.random.default_rng(0).normal(0.0005, 0.01, 300)
    m = compute_metrics(r, trade_pnls=[1.0, -2.0], traded_notional=r, equity=r + 2, exposure=r)
    assert tuple(m) == METRIC_NAMES
    assert all(type(v) is float for v in m.values())


def test_max_drawdown_and_its_duration_in_bars():
    # equity: 1.1, 0.99, 1.089, 1.1979, 1.1859..., 1.1740..., 1.2914...
    r = np.array([0.1, -0.1, 0.1, 0.1, -0.01, -0.01, 0.1])
    assert max_drawdown(r) == pytest.approx(-0.1)
    # Under water at bars 1-2 (2 bars), then bars 4-5 (2 bars).
    assert max_drawdown_duration(r) == 2.0
    assert max_drawdown_duration(np.array([-0.1, 0.0, 0.05, 0.2, -0.01])) == 3.0
    assert max_drawdown_duration(np.array([0.01, 0.02])) == 0.0


def test_a_loss_on_the_first_bar_counts_as_a_drawdown():
    assert max_drawdown(np.array([-0.2, 0.1])) == pytest.approx(-0.2)


def test_calmar_is_nan_without_a_drawdown():
    assert math.isnan(calmar_ratio(np.array([0.01, 0.02, 0.0])))


def test_trade_metrics_from_closed_trade_pnls():
    pnls = np.array([10.0, -5.0, 0.0, 20.0, -5.0])
    m = compute_metrics(np.zeros(5), trade_pnls=pnls)
    assert m["n_trades"] == 5.0
    assert m["win_rate"] == pytest.approx(0.4)
    assert m["profit_factor"] == pytest.approx(3.0)
    assert m["avg_trade"] == pytest.approx(4.0)
    assert win_rate(pnls) == m["win_rate"] and profit_factor(pnls) == m["profit_factor"]


def test_trade_metrics_are_nan_without_trades_and_profit_factor_inf_without_losses():
    none = compute_metrics(np.zeros(3))
    empty = compute_metrics(np.zeros(3), trade_pnls=[])
    for m in (none, empty):
        assert m["n_trades"] == 0.0
        assert all(math.isnan(m[k]) for k in ("win_rate", "profit_factor", "avg_trade"))
    assert profit_factor([1.0, 2.0]) == math.inf
    assert math.isnan(profit_factor([0.0, 0.0]))


def test_turnover_and_exposure():
    equity = np.array([100.0, 100.0, 100.0, 100.0])
    traded = np.array([100.0, 0.0, -50.0, 50.0])
    m = compute_metrics(
        np.zeros(4), traded_notional=traded, equity=equity, exposure=[0, 1, -0.5, 0]
    )
    assert m["turnover"] == pytest.approx(2.0)
    assert m["turnover_annual"] == pytest.approx(2.0 * 252 / 4)
    assert m["exposure"] == pytest.approx(0.5)
    assert m["avg_exposure"] == pytest.approx(0.375)
    assert turnover(traded, equity) == m["turnover"]
    absent = compute_metrics(np.zeros(4))
    assert math.isnan(absent["turnover"]) and math.isnan(absent["exposure"])


def test_json_safe_turns_nan_and_inf_into_none():
    m = compute_metrics(np.full(5, 0.01), trade_pnls=[1.0])
    safe = json_safe(m)
    assert safe["sharpe"] is None  # zero dispersion: +inf, as in empyrical
    assert safe["profit_factor"] is None and safe["calmar"] is None
    json.dumps(safe, allow_nan=False)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValidationError, match="1-D"):
        compute_metrics(np.zeros((3, 2)))
    with pytest.raises(ValidationError, match="periods"):
        compute_metrics(np.zeros(3), periods=0)
    with pytest.raises(ValidationError, match="numeric"):
        compute_metrics(["a", "b"])
    with pytest.raises(ValidationError, match="index 1"):
        compute_metrics([0.01, np.inf])
