"""The Decimal ledger: cash, FIFO lots, round-trip trades, the exact accounting identity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D  # noqa: N817 (short money literals)

import pytest

from stocktrade.domain.ledger import Ledger, LedgerInvariantError
from stocktrade.domain.orders import Fill, Order, Side
from stocktrade.errors import ValidationError

T0 = datetime(2015, 1, 2, tzinfo=UTC)
_seq = iter(range(10**6))


def fill(
    side: Side, qty: str, price: str, fee: str = "0", day: int = 0, symbol: str = "AAPL"
) -> Fill:
    n = next(_seq)
    return Fill(f"f{n}", f"o{n}", symbol, side, D(qty), D(price), D(fee), T0 + timedelta(days=day))


def test_a_buy_moves_cash_and_opens_a_lot() -> None:
    ledger = Ledger(D("10000"))
    assert ledger.apply(fill(Side.BUY, "10", "100.5", "1.005")) == []
    assert ledger.cash == D("10000") - D("1005") - D("1.005")
    assert ledger.position("AAPL") == 10
    assert ledger.equity({"AAPL": D("101")}) == ledger.cash + 10 * D("101")


def test_sells_close_lots_first_in_first_out_with_fees_split_by_quantity() -> None:
    ledger = Ledger(D("10000"))
    ledger.apply(fill(Side.BUY, "10", "100", "1.00", day=0))
    ledger.apply(fill(Side.BUY, "5", "110", "0.55", day=1))
    trades = ledger.apply(fill(Side.SELL, "12", "120", "1.44", day=3))
    assert [(t.qty, t.entry_price) for t in trades] == [(10, 100), (2, 110)]
    first, second = trades
    assert first.entry_fee == D("1.00") and second.entry_fee == D("0.22")
    assert first.exit_fee + second.exit_fee == D("1.44")
    assert first.pnl == 10 * 20 - first.fees
    assert first.holding_time == timedelta(days=3) and second.holding_time == timedelta(days=2)
    (lot,) = ledger.open_lots("AAPL")
    assert (lot.qty, lot.price, lot.fee) == (3, 110, D("0.33"))
    ledger.check_invariant({"AAPL": D("115")})
    assert ledger.realised_pnl == sum(t.pnl for t in ledger.trades)


def test_a_sell_beyond_the_position_opens_a_short_lot_and_a_buy_covers_it() -> None:
    ledger = Ledger(D("1000"))
    ledger.apply(fill(Side.BUY, "3", "10"))
    (closed,) = ledger.apply(fill(Side.SELL, "5", "12", "0.5"))
    assert closed.is_long and closed.qty == 3 and closed.exit_fee == D("0.3")
    assert ledger.position("AAPL") == -2
    (short,) = ledger.apply(fill(Side.BUY, "2", "9"))
    assert not short.is_long and short.gross_pnl == 2 * 3 and short.entry_fee == D("0.2")
    assert ledger.position("AAPL") == 0
    assert ledger.check_invariant({}) == ledger.cash == D("1000") + 6 + 6 - D("0.5")


def test_the_identity_holds_exactly_for_awkward_float_derived_prices() -> None:
    ledger = Ledger(D("9999.99"))
    ledger.apply(fill(Side.BUY, "7", "95.20368257399999", "0.6664257780179999"))
    ledger.apply(fill(Side.SELL, "3", "97.12000000000001", "0.29136000000000003"))
    ledger.apply(fill(Side.BUY, "1", "0.1", "0.30000000000000004", symbol="MSFT"))
    marks = {"AAPL": D("96.3333333333333"), "MSFT": D("0.2")}
    eq = ledger.check_invariant(marks)
    assert eq == ledger.cash + ledger.market_value(marks)
    assert ledger.positions == {"AAPL": 4, "MSFT": 1}


def test_a_broken_ledger_is_detected() -> None:
    ledger = Ledger(D("100"))
    ledger.apply(fill(Side.BUY, "1", "10"))
    ledger.cash += D("0.000000001")
    with pytest.raises(LedgerInvariantError):
        ledger.check_invariant({"AAPL": D("10")})


def test_trades_report_return_and_net_pnl() -> None:
    ledger = Ledger(D("1000"))
    ledger.apply(fill(Side.BUY, "10", "50", "0.5"))
    (t,) = ledger.apply(fill(Side.SELL, "10", "55", "0.55"))
    assert t.gross_pnl == 50 and t.fees == D("1.05") and t.pnl == D("48.95")
    assert t.return_pct == D("0.0979")


def test_invalid_fills_orders_and_ledgers_are_rejected_with_reasons() -> None:
    with pytest.raises(ValidationError, match="qty must be > 0"):
        fill(Side.BUY, "0", "10")
    with pytest.raises(ValidationError, match="fee must be >= 0"):
        fill(Side.BUY, "1", "10", "-1")
    with pytest.raises(ValidationError, match="price must be > 0"):
        fill(Side.SELL, "1", "0")
    with pytest.raises(ValidationError, match="client_order_id"):
        Order("", "AAPL", Side.BUY, D(1), T0)
    with pytest.raises(ValidationError, match="initial_cash"):
        Ledger(D("-1"))
    ledger = Ledger(D("100"))
    ledger.apply(fill(Side.BUY, "1", "10"))
    with pytest.raises(ValidationError, match="no mark price"):
        ledger.equity({})
