"""Risk limits in backtests: every rejection or adjustment has a code and a reason, and the
compiled fast path and the bar-by-bar path apply them identically."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import numpy as np
import pytest

from stocktrade.backtest.config import BacktestConfig
from stocktrade.backtest.engine import run_backtest
from stocktrade.data.arrays import BarArrays
from stocktrade.domain.costs import CostModel, FillRule
from stocktrade.domain.risk import RiskCode, RiskLimits, decode_flags, describe, merge_flags
from stocktrade.errors import ValidationError
from stocktrade.strategies import BarInput, BuyAndHold, PositionView, Signal


class Scripted:
    """Replays a fixed list of targets (NaN = no opinion); vectorised and bar by bar."""

    name = "scripted"
    warmup = 0

    def __init__(self, targets) -> None:
        self._targets = np.asarray(targets, dtype=np.float64)

    def params(self) -> dict:
        return {}

    def reset(self) -> None:
        pass

    def on_bar(self, bar: BarInput, position: PositionView) -> Signal:
        return Signal(float(self._targets[bar.index]))

    def targets(self, bars: BarArrays) -> np.ndarray:
        return self._targets[: len(bars)].copy()


def bars_from_close(close, *, minutes: bool = False, symbol: str = "X") -> BarArrays:
    close = np.asarray(close, dtype=np.float64)
    n = len(close)
    step = np.timedelta64(1, "h") if minutes else np.timedelta64(1, "D")
    ts = np.datetime64("2015-01-05T14:00", "ns") + np.arange(n) * step
    open_ = np.concatenate(([close[0]], close[:-1]))
    return BarArrays(
        symbol,
        "1h" if minutes else "1d",
        ts,
        open_,
        np.maximum(open_, close) * 1.01,
        np.minimum(open_, close) * 0.99,
        close,
        np.full(n, 1e6),
    )


def both_paths(data, strategy, config: BacktestConfig):
    fast = run_backtest(data, strategy, config)
    step = run_backtest(data, strategy, replace(config, mode="step", check_invariants=True))
    for s in fast.books:
        assert fast.books[s].records.equals(step.books[s].records)
        np.testing.assert_array_equal(fast.books[s].event_code, step.books[s].event_code)
        np.testing.assert_array_equal(fast.books[s].event_bar, step.books[s].event_bar)
        np.testing.assert_allclose(fast.books[s].equity, step.books[s].equity, rtol=1e-12)
    fast.verify()
    step.verify()
    return fast


def codes_at(result, symbol: str = "X") -> list[tuple[int, str]]:
    return [(e.bar_index, e.code.name) for e in result.books[symbol].risk_events]


CFG = BacktestConfig(initial_cash=Decimal(10_000), costs=CostModel(commission_bps=Decimal(10)))


def test_daily_loss_kill_switch_flattens_and_halts_for_the_rest_of_the_run() -> None:
    close = [100, 101, 102, 80, 85, 90, 95, 100]
    limits = RiskLimits(max_daily_loss_pct=Decimal("0.1"))
    result = both_paths({"X": bars_from_close(close)}, BuyAndHold(), replace(CFG, risk=limits))
    book = result.books["X"]
    kinds = list(book.records.kind)
    assert kinds == [0, 1]  # the buy, then the kill-switch flatten
    assert list(book.records.fill_bar) == [1, 4]
    assert book.qty[3] > 0 and (book.qty[4:] == 0).all()
    events = codes_at(result)
    assert events[0] == (3, "KILL_SWITCH")
    assert events[1:] == [(t, "HALTED") for t in range(4, 8)]
    assert book.orders[1].reason == "kill switch"
    assert "daily loss limit" in book.risk_events[0].reason


def test_throttle_enforces_bars_between_orders_and_retries_a_sticky_target() -> None:
    targets = [1, 0, 1, 1, 1, 0, 0, 0, 0]
    limits = RiskLimits(min_bars_between_orders=3)
    result = both_paths(
        {"X": bars_from_close(np.linspace(10, 12, 9))}, Scripted(targets), replace(CFG, risk=limits)
    )
    assert list(result.books["X"].records.bar) == [0, 5]
    assert codes_at(result) == [(1, "THROTTLE_MIN_BARS")]


def test_max_orders_per_day_resets_on_the_next_utc_day() -> None:
    # hourly bars from 14:00 UTC: bars 0-9 are on day one, 10-19 on day two
    targets = [1, 0] * 10
    limits = RiskLimits(max_orders_per_day=2)
    bars = bars_from_close(np.linspace(10, 11, 20), minutes=True)
    result = both_paths({"X": bars}, Scripted(targets), replace(CFG, risk=limits))
    assert list(result.books["X"].records.bar) == [0, 1, 10, 11]
    events = codes_at(result)
    assert (2, "THROTTLE_MAX_PER_DAY") in events and (12, "THROTTLE_MAX_PER_DAY") in events
    assert all(code == "THROTTLE_MAX_PER_DAY" for _, code in events)


def test_warmup_bars_hold_back_the_first_order() -> None:
    result = both_paths(
        {"X": bars_from_close(np.linspace(10, 12, 12))},
        BuyAndHold(),
        replace(CFG, risk=RiskLimits(warmup_bars=5)),
    )
    assert list(result.books["X"].records.bar) == [5]
    assert codes_at(result) == [(t, "WARMUP") for t in range(5)]


def test_long_only_book_turns_short_targets_into_exits() -> None:
    targets = [1, 1, -1, -1, 1, -1]
    result = both_paths(
        {"X": bars_from_close([10, 11, 12, 13, 14, 15, 16])}, Scripted([*targets, np.nan]), CFG
    )
    book = result.books["X"]
    assert list(book.records.target) == [1, 0, 1, 0]
    assert (book.qty >= 0).all()
    assert codes_at(result) == [(2, "SHORT_NOT_ALLOWED"), (5, "SHORT_NOT_ALLOWED")]


def test_long_short_book_goes_short() -> None:
    limits = RiskLimits(allow_short=True)
    result = both_paths(
        {"X": bars_from_close([10, 11, 12, 11, 10])},
        Scripted([-1, -1, -1, -1, -1]),
        replace(CFG, risk=limits),
    )
    assert result.books["X"].qty[-1] < 0
    assert result.books["X"].equity[-1] > 10_000 * 0.99


def test_position_and_notional_caps_resize_the_order_with_a_reason() -> None:
    bars = {"X": bars_from_close([100, 100, 101, 102])}
    qty_cap = both_paths(
        bars, BuyAndHold(), replace(CFG, risk=RiskLimits(max_position_qty=Decimal(7)))
    )
    assert qty_cap.books["X"].qty[-1] == 7
    assert codes_at(qty_cap) == [(1, "MAX_POSITION")]
    assert "7 units" in qty_cap.books["X"].risk_events[0].reason
    notional = both_paths(
        bars, BuyAndHold(), replace(CFG, risk=RiskLimits(max_notional=Decimal(2_550)))
    )
    assert notional.books["X"].qty[-1] == 25
    assert codes_at(notional) == [(1, "MAX_NOTIONAL")]


def test_an_unaffordable_order_is_rejected_with_insufficient_cash() -> None:
    result = both_paths(
        {"X": bars_from_close([500, 500, 500])},
        BuyAndHold(),
        replace(CFG, initial_cash=Decimal(100)),
    )
    (order,) = result.books["X"].orders
    assert order.status.value == "rejected" and order.qty == 0
    assert codes_at(result) == [(1, "INSUFFICIENT_CASH")]


def test_risk_codes_round_trip_through_kernel_flags_and_carry_reasons() -> None:
    codes = [RiskCode.WARMUP, RiskCode.MAX_NOTIONAL, RiskCode.NO_NEXT_BAR]
    assert decode_flags(merge_flags(codes)) == codes
    limits = RiskLimits(min_bars_between_orders=4, max_orders_per_day=3)
    assert "4 bars" in describe(RiskCode.THROTTLE_MIN_BARS, limits)
    assert "3 orders" in describe(RiskCode.THROTTLE_MAX_PER_DAY, limits)
    assert all(describe(c) for c in RiskCode)
    assert RiskCode.MAX_POSITION.is_rejection is False and RiskCode.HALTED.is_rejection


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_position_qty": -1},
        {"max_notional": 0},
        {"max_daily_loss": "-5"},
        {"max_daily_loss_pct": "1.5"},
        {"min_bars_between_orders": -1},
        {"max_orders_per_day": 0},
        {"warmup_bars": 2.5},
        {"allow_short": "yes"},
    ],
)
def test_invalid_risk_limits_are_rejected(kwargs) -> None:
    with pytest.raises(ValidationError, match="invalid risk limits"):
        RiskLimits(**kwargs)


def test_risk_limits_round_trip_through_dicts_and_reject_unknown_fields() -> None:
    limits = RiskLimits(max_notional=Decimal("5000.5"), max_orders_per_day=4, allow_short=True)
    assert RiskLimits.from_dict(limits.to_dict()) == limits
    with pytest.raises(ValidationError, match="unknown risk limit fields"):
        RiskLimits.from_dict({"max_leverage": 2})


def test_kill_switch_on_cash_loss_also_works_with_same_bar_close_fills() -> None:
    close = [100, 100, 70, 75, 80]
    limits = RiskLimits(max_daily_loss=Decimal(1_000))
    result = both_paths(
        {"X": bars_from_close(close)},
        BuyAndHold(),
        replace(CFG, risk=limits, fill_rule=FillRule.CLOSE),
    )
    book = result.books["X"]
    assert list(book.records.fill_bar) == [0, 2] and (book.qty[2:] == 0).all()
