"""Property tests: random bars and random order/target sequences never break the books.

* Decimal ledger: after every fill, ``cash + marked positions`` equals ``initial + realised +
  unrealised − open entry fees`` **exactly**, and the FIFO trades' net P&L sums exactly to the
  realised P&L.
* Float kernel (the compiled fast path): at every bar ``cash + qty·close == equity``, and the
  float curves agree with a Decimal ledger replaying the same fills within the documented
  tolerance, 1e-9 of ``max(initial cash, |equity|, |cash|, |position value|)`` (observed: ~1e-13);
  the float position equals the ledger's exactly; the bar-by-bar path makes the same orders.
* Paper broker + ledger with random signed quantity orders: the identity holds exactly after
  every bar.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stocktrade.adapters.brokers.simulated import SimulatedBroker
from stocktrade.backtest.config import BacktestConfig
from stocktrade.backtest.engine import run_backtest
from stocktrade.data.arrays import BarArrays
from stocktrade.domain.costs import CostModel, FillRule
from stocktrade.domain.ledger import LEDGER_CONTEXT, Ledger
from stocktrade.domain.orders import Fill, Side
from stocktrade.domain.risk import RiskLimits
from stocktrade.strategies import BarInput, PositionView, Signal

T0 = datetime(2020, 1, 1, tzinfo=UTC)

prices = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("5000"), places=4)
quantities = st.one_of(
    st.integers(min_value=1, max_value=500).map(Decimal),
    st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("50"), places=6),
)
fees = st.decimals(min_value=Decimal(0), max_value=Decimal("20"), places=9)


@settings(max_examples=150, deadline=None)
@given(
    cash=st.decimals(min_value=Decimal(0), max_value=Decimal(10**7), places=2),
    fills=st.lists(
        st.tuples(
            st.sampled_from(["AAA", "BBB"]),
            st.sampled_from(list(Side)),
            quantities,
            prices,
            fees,
            prices,
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_decimal_ledger_identity_holds_exactly_after_every_fill(cash, fills) -> None:
    ledger = Ledger(cash)
    marks = {"AAA": Decimal(1), "BBB": Decimal(1)}
    cash_flow = cash
    for i, (symbol, side, qty, price, fee, mark) in enumerate(fills):
        f = Fill(f"f{i}", f"o{i}", symbol, side, qty, price, fee, T0 + timedelta(hours=i))
        ledger.apply(f)
        with localcontext(LEDGER_CONTEXT):
            cash_flow += f.cash_delta
        marks[symbol] = mark
        ledger.check_invariant(marks)  # exact, raises on any difference
        with localcontext(LEDGER_CONTEXT):  # exact sums need the ledger's precision
            assert ledger.cash == cash_flow
            assert sum((t.pnl for t in ledger.trades), Decimal(0)) == ledger.realised_pnl
            fees_booked = sum((t.exit_fee + t.entry_fee for t in ledger.trades), Decimal(0))
            assert fees_booked + ledger.open_fees == ledger.fees_paid


@st.composite
def bar_series(draw) -> BarArrays:
    n = draw(st.integers(min_value=2, max_value=40))
    rets = draw(st.lists(st.floats(-0.3, 0.3), min_size=n, max_size=n))
    gaps = draw(st.lists(st.floats(-0.05, 0.05), min_size=n, max_size=n))
    wick = draw(st.lists(st.floats(0, 0.05), min_size=n, max_size=n))
    start = draw(st.floats(0.5, 500))
    close = start * np.cumprod(1 + np.asarray(rets))
    open_ = np.concatenate(([start], close[:-1])) * (1 + np.asarray(gaps))
    high = np.maximum(open_, close) * (1 + np.asarray(wick))
    low = np.minimum(open_, close) * (1 - np.asarray(wick))
    hours = draw(st.sampled_from([24, 6]))  # daily bars, or several bars per day
    ts = np.datetime64("2020-01-01", "ns") + np.arange(n) * np.timedelta64(hours, "h")
    return BarArrays("X", "1d", ts, open_, high, low, close, np.ones(n))


class Scripted:
    name = "scripted"
    warmup = 0

    def __init__(self, targets: list[float]) -> None:
        self.t = np.asarray(targets, dtype=np.float64)

    def params(self) -> dict:
        return {}

    def reset(self) -> None:
        pass

    def on_bar(self, bar: BarInput, position: PositionView) -> Signal:
        return Signal(float(self.t[bar.index]))

    def targets(self, bars: BarArrays) -> np.ndarray:
        return self.t[: len(bars)].copy()


configs = st.builds(
    BacktestConfig,
    initial_cash=st.sampled_from([Decimal(1000), Decimal("12345.67"), Decimal(250_000)]),
    costs=st.builds(
        CostModel,
        commission_bps=st.sampled_from([Decimal(0), Decimal(1), Decimal(10), Decimal("25.5")]),
        commission_per_share=st.sampled_from([Decimal(0), Decimal("0.01")]),
        slippage_bps=st.sampled_from([Decimal(0), Decimal(5)]),
        slippage_range_frac=st.sampled_from([Decimal(0), Decimal("0.1")]),
    ),
    risk=st.builds(
        RiskLimits,
        allow_short=st.booleans(),
        max_position_qty=st.sampled_from([None, Decimal(50)]),
        max_daily_loss_pct=st.sampled_from([None, Decimal("0.05")]),
        min_bars_between_orders=st.sampled_from([0, 2]),
    ),
    fill_rule=st.sampled_from(list(FillRule)),
    whole_shares=st.booleans(),
    close_at_end=st.booleans(),
)
target_values = st.sampled_from([float("nan"), 0.0, 0.25, 0.5, 1.0, 1.5, -0.5, -1.0])


@settings(max_examples=120, deadline=None)
@given(bars=bar_series(), config=configs, data=st.data())
def test_random_targets_never_break_the_float_or_decimal_books(bars, config, data) -> None:
    targets = data.draw(st.lists(target_values, min_size=len(bars), max_size=len(bars)))
    fast = run_backtest({"X": bars}, Scripted(targets), config)
    book = fast.books["X"]
    assert np.array_equal(book.cash + book.qty * book.close, book.equity)
    fast.verify()  # every bar: exact Decimal identity; float vs Decimal within tolerance
    step = run_backtest(
        {"X": bars}, Scripted(targets), replace(config, mode="step", check_invariants=True)
    )
    assert step.books["X"].records.equals(book.records)
    step.verify()


@settings(max_examples=80, deadline=None)
@given(
    bars=bar_series(),
    orders=st.lists(
        st.one_of(st.none(), st.integers(-30, 30).filter(bool)), min_size=40, max_size=40
    ),
    costs=st.builds(
        CostModel,
        commission_bps=st.sampled_from([Decimal(0), Decimal(7)]),
        slippage_range_frac=st.sampled_from([Decimal(0), Decimal("0.2")]),
    ),
)
def test_random_quantity_orders_through_the_paper_broker_keep_the_ledger_exact(
    bars, orders, costs
) -> None:
    ledger = Ledger(Decimal(10_000))
    broker = SimulatedBroker(costs)
    fills = 0
    for t in range(len(bars)):
        ts = T0 + timedelta(days=t)
        done = broker.on_bar_open(
            "X",
            open_=float(bars.open[t]),
            high=float(bars.high[t]),
            low=float(bars.low[t]),
            ts=ts,
            bar_index=t,
            cash=ledger.cash,
            qty=ledger.position("X"),
        )
        for ex in done:
            assert ex.fill is not None and ex.fill.price > 0
            ledger.apply(ex.fill)
            fills += 1
        ledger.check_invariant({"X": Decimal(repr(float(bars.close[t])))})
        if orders[t] is not None:
            broker.submit_qty("X", Decimal(orders[t]), ts=ts, bar_index=t)
    assert fills == sum(o is not None for o in orders[: len(bars) - 1])
    with localcontext(LEDGER_CONTEXT):
        assert sum((t.pnl for t in ledger.trades), Decimal(0)) == ledger.realised_pnl
