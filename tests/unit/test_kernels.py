"""The shared float64 kernels: sizing, costs, caps, risk gate, and the compiled bar loop."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from stocktrade.domain.risk import RiskCode
from stocktrade.sim import kernels as k

INF = math.inf


def run_target(
    cash,
    qty,
    target,
    price=100.0,
    *,
    high=None,
    low=None,
    cb=0.0,
    cps=0.0,
    sb=0.0,
    srf=0.0,
    whole=True,
    short=False,
    max_qty=INF,
    max_notional=INF,
):
    return k.execute_target_limited(
        cash,
        qty,
        target,
        price,
        price if high is None else high,
        price if low is None else low,
        cb,
        cps,
        sb,
        srf,
        whole,
        short,
        max_qty,
        max_notional,
    )


def test_all_in_buy_spends_cash_on_whole_shares_including_commission() -> None:
    cash, qty, traded, fee, px, flags = run_target(10_000.0, 0.0, 1.0, cb=10.0)
    assert traded == qty == 99.0  # floor(10000 / (100 * 1.001)) = floor(99.9)
    assert px == 100.0
    assert fee == pytest.approx(9.9)
    assert cash == pytest.approx(10_000 - 9_900 - 9.9)
    assert flags == 0


def test_all_in_buy_with_fractional_shares_leaves_no_cash() -> None:
    cash, qty, *_ = run_target(10_000.0, 0.0, 1.0, cb=10.0, whole=False)
    assert qty == pytest.approx(10_000 / 100.1)
    assert abs(cash) < 1e-9


def test_flat_target_sells_the_whole_position_and_pays_exit_commission() -> None:
    cash, qty, traded, fee, px, _ = run_target(90.1, 99.0, 0.0, price=110.0, cb=10.0)
    assert (qty, traded, px) == (0.0, -99.0, 110.0)
    assert fee == pytest.approx(99 * 110 * 0.001)
    assert cash == pytest.approx(90.1 + 99 * 110 - fee)


def test_long_only_book_clips_a_short_target_to_flat_and_says_so() -> None:
    cash, qty, traded, _fee, _px, flags = run_target(1_000.0, 5.0, -1.0)
    assert qty == 0.0 and traded == -5.0 and cash == 1_500.0
    assert flags == RiskCode.SHORT_NOT_ALLOWED.flag


def test_flip_from_long_to_short_closes_then_sizes_from_the_new_equity() -> None:
    cash, qty, traded, fee, px, _ = run_target(0.0, 10.0, -1.0, cb=10.0, short=True)
    # close 10 at 100: cash = 1000 - 1; open short floor(999 / 100.1) = 9 units
    assert qty == -9.0 and traded == -19.0 and px == 100.0
    assert fee == pytest.approx(1.0 + 0.9)
    assert cash == pytest.approx(999.0 + 900 - 0.9)


def test_partial_reduction_keeps_the_whole_shares_worth_the_target() -> None:
    cash, qty, traded, *_ = run_target(0.0, 100.0, 0.5)
    assert (qty, traded, cash) == (50.0, -50.0, 5_000.0)


def test_slippage_in_bps_and_bar_range_moves_the_price_against_the_trader() -> None:
    *_, px_buy, _ = run_target(10_000.0, 0.0, 1.0, high=102.0, low=98.0, sb=10.0, srf=0.25)
    assert px_buy == pytest.approx(100 * 1.001 + 0.25 * 4)
    *_, px_sell, _ = run_target(0.0, 10.0, 0.0, high=102.0, low=98.0, sb=10.0, srf=0.25)
    assert px_sell == pytest.approx(100 * 0.999 - 0.25 * 4)


def test_per_share_commission_is_part_of_the_unit_cost() -> None:
    cash, qty, _traded, fee, *_ = run_target(1_000.0, 0.0, 1.0, cps=1.0)
    assert qty == 9.0  # floor(1000 / 101)
    assert fee == 9.0 and cash == 1_000 - 900 - 9


def test_max_position_and_max_notional_cap_the_order_and_raise_flags() -> None:
    _c, qty, _t, _f, _p, flags = run_target(10_000.0, 0.0, 1.0, max_qty=7.0)
    assert qty == 7.0 and flags == RiskCode.MAX_POSITION.flag
    _c, qty, _t, _f, _p, flags = run_target(10_000.0, 0.0, 1.0, max_notional=2_550.0)
    assert qty == 25.0 and flags == RiskCode.MAX_NOTIONAL.flag
    _c, qty, traded, _f, _p, flags = run_target(0.0, 40.0, 1.0, max_qty=30.0)
    assert qty == 30.0 and traded == -10.0 and flags == RiskCode.MAX_POSITION.flag


def test_an_order_too_small_for_one_share_trades_nothing_and_flags_insufficient_cash() -> None:
    cash, qty, traded, fee, _px, flags = run_target(50.0, 0.0, 1.0)
    assert (cash, qty, traded, fee) == (50.0, 0.0, 0.0, 0.0)
    assert flags == RiskCode.INSUFFICIENT_CASH.flag


def test_execute_target_is_the_uncapped_limited_kernel() -> None:
    args = (10_000.0, 3.0, 0.7, 101.5, 103.0, 99.0, 5.0, 0.01, 2.0, 0.1, True, True)
    assert k.execute_target(*args) == k.execute_target_limited(*args, INF, INF)[:5]


def test_compiled_and_uncompiled_kernels_give_identical_floats() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        args = (
            float(rng.uniform(-1e3, 1e5)),
            float(rng.integers(-50, 50)),
            float(rng.choice([-1, -0.5, 0, 0.3, 1, 2])),
            float(rng.uniform(1, 500)),
            0.0,
            0.0,
            float(rng.uniform(0, 30)),
            float(rng.uniform(0, 0.05)),
            float(rng.uniform(0, 30)),
            float(rng.uniform(0, 0.3)),
            bool(rng.integers(2)),
            bool(rng.integers(2)),
            float(rng.choice([INF, 20.0])),
            float(rng.choice([INF, 3_000.0])),
        )
        args = (*args[:4], args[3] * 1.01, args[3] * 0.99, *args[6:])
        assert k.execute_target_limited(*args) == k.execute_target_limited.py_func(*args)


def test_kernel_flags_are_the_risk_code_bits() -> None:
    for code in RiskCode:
        assert getattr(k, f"FLAG_{code.name}") == code.flag


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, (1.0, 0)),
        ({"desired": math.nan}, (0.0, 0)),
        ({"halted": True}, (0.0, RiskCode.HALTED.flag)),
        ({"bar_index": 3, "warmup": 5}, (0.0, RiskCode.WARMUP.flag)),
        ({"last_order": 8, "min_bars": 3}, (0.0, RiskCode.THROTTLE_MIN_BARS.flag)),
        ({"last_order": 7, "min_bars": 3}, (1.0, 0)),
        ({"orders_today": 2, "per_day": 2}, (0.0, RiskCode.THROTTLE_MAX_PER_DAY.flag)),
        ({"desired": -1.0}, (0.0, 0)),
        ({"desired": -1.0, "current": 1.0}, (0.0, RiskCode.SHORT_NOT_ALLOWED.flag)),
        ({"desired": -1.0, "short": True}, (-1.0, 0)),
    ],
)
def test_risk_gate_rejects_or_adjusts_with_a_reason_code(kwargs, expected) -> None:
    a: dict[str, Any] = {
        "desired": 1.0,
        "current": 0.0,
        "bar_index": 10,
        "halted": False,
        "last_order": k.NEVER,
        "orders_today": 0,
        "warmup": 0,
        "short": False,
        "min_bars": 0,
        "per_day": 1 << 62,
    }
    a.update(kwargs)
    got = k.risk_gate(
        a["desired"],
        a["current"],
        a["bar_index"],
        a["halted"],
        a["last_order"],
        a["orders_today"],
        a["warmup"],
        a["short"],
        a["min_bars"],
        a["per_day"],
    )
    assert got == expected


def test_daily_loss_limit_fires_on_cash_or_fraction_of_opening_equity() -> None:
    assert k.daily_loss_breached(1_000.0, 900.0, 100.0, INF)
    assert not k.daily_loss_breached(1_000.0, 901.0, 100.0, INF)
    assert k.daily_loss_breached(1_000.0, 950.0, INF, 0.05)
    assert not k.daily_loss_breached(1_000.0, 1_100.0, INF, 0.05)
    assert not k.daily_loss_breached(1_000.0, 0.0, INF, INF)


def _simulate(close, targets, *, fill_on_close=False, close_at_end=False, cash=1_000.0, cb=0.0):
    n = len(close)
    close = np.asarray(close, dtype=np.float64)
    open_ = np.concatenate(([close[0]], close[:-1]))
    high = np.maximum(open_, close)
    low = np.minimum(open_, close)
    outs = [np.empty(n) for _ in range(3)]
    m = n + 1
    recs = [
        np.empty(m, np.int64),
        np.empty(m, np.int64),
        np.empty(m),
        np.empty(m, np.int64),
        np.empty(m),
        np.empty(m),
        np.empty(m),
        np.empty(m, np.int64),
        np.empty(m),
    ]
    ev = [np.empty(3 * n + 2, np.int64), np.empty(3 * n + 2, np.int64)]
    n_ord, n_ev = k.simulate(
        open_,
        high,
        low,
        close,
        np.arange(n, dtype=np.int64),
        np.asarray(targets, dtype=np.float64),
        np.empty((0, 3), np.int64),
        np.empty(3),
        False,
        cash,
        cb,
        0.0,
        0.0,
        0.0,
        fill_on_close,
        True,
        close_at_end,
        0,
        False,
        0,
        1 << 62,
        INF,
        INF,
        INF,
        INF,
        *outs,
        *recs,
        *ev,
    )
    return outs, [r[:n_ord] for r in recs], [e[:n_ev] for e in ev], open_


def test_simulate_fills_next_open_and_marks_equity_at_close() -> None:
    (cash, qty, equity), recs, _ev, open_ = _simulate([10, 11, 12, 13], [1, 1, 0, 0])
    bar, _kind, _target, fill_bar, traded, price = recs[:6]
    assert list(bar) == [0, 2] and list(fill_bar) == [1, 3]
    assert list(traded) == [100.0, -100.0] and list(price) == [open_[1], open_[3]]
    np.testing.assert_array_equal(equity, cash + qty * np.array([10, 11, 12, 13.0]))
    assert equity[-1] == 1_000 + 100 * (12 - 10)


def test_simulate_with_close_fills_at_the_deciding_bars_close() -> None:
    (_cash, qty, equity), recs, _ev, _o = _simulate(
        [10, 11, 12, 13], [1, 1, 0, 0], fill_on_close=True
    )
    assert list(recs[3]) == [0, 2] and list(recs[5]) == [10.0, 12.0]
    assert list(qty) == [100, 100, 0, 0] and equity[-1] == 1_200


def test_simulate_expires_an_order_decided_on_the_last_bar() -> None:
    (_c, qty, _e), recs, (ev_bar, ev_flags), _o = _simulate([10, 11, 12], [np.nan, np.nan, 1])
    assert list(recs[3]) == [-1] and list(recs[7]) == [RiskCode.NO_NEXT_BAR.flag]
    assert list(ev_bar) == [2] and list(ev_flags) == [RiskCode.NO_NEXT_BAR.flag]
    assert qty[-1] == 0


def test_simulate_can_close_the_position_at_the_end() -> None:
    (cash, qty, equity), recs, _ev, _o = _simulate(
        [10, 11, 12], [1, 1, 1], close_at_end=True, cb=10
    )
    assert list(recs[1]) == [k.ORDER_STRATEGY, k.ORDER_END_OF_DATA]
    assert qty[-1] == 0 and equity[-1] == cash[-1]
