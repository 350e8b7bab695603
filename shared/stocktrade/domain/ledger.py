"""The Decimal ledger: cash, positions as FIFO lots, and the round-trip trades they produce.

Every fill changes cash by ``-signed_qty * price - fee``. A fill first closes open lots of the
opposite side, oldest first (FIFO); each closed piece becomes a :class:`Trade`. What is left
opens a new lot. Fees are split between the pieces a fill touches in proportion to quantity,
so every fee is counted exactly once: the exit share in the trade it closes, the entry share
in the lot (and later in the trade that closes that lot).

Arithmetic runs in a private :class:`decimal.Context` with 80 significant digits, and fee
shares are rounded to 1e-24 with the remainder kept, so for any realistic book (values below
1e30, prices and quantities converted from float64 via ``repr``) every sum is exact and

``cash + Σ qty·mark  ==  initial_cash + realised_pnl + Σ open_qty·(mark − entry) − open_fees``

holds with ``==`` (:meth:`Ledger.check_invariant`), and the net P&L of the trades sums to
:attr:`Ledger.realised_pnl`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext

from stocktrade.domain.orders import Fill, Side
from stocktrade.errors import ValidationError

__all__ = ["LEDGER_CONTEXT", "Ledger", "LedgerInvariantError", "Lot", "Trade"]

#: Precision used for all ledger arithmetic (exact for realistic books, see module docs).
LEDGER_CONTEXT = Context(prec=80, rounding=ROUND_HALF_EVEN)
_FEE_QUANTUM = Decimal("1e-24")
_RATIO_QUANTUM = Decimal("1e-12")
_ZERO = Decimal(0)


class LedgerInvariantError(AssertionError):
    """The ledger's two ways of computing equity disagree (a bug, never a user error)."""


@dataclass(frozen=True, slots=True)
class Trade:
    """A closed round trip (or the closed part of one), FIFO-matched.

    Attributes:
        symbol: instrument.
        side: side of the entry (``BUY`` = long trade, ``SELL`` = short trade).
        qty: unsigned quantity closed.
        entry_ts, entry_price: time and execution price of the opening fill.
        exit_ts, exit_price: time and execution price of the closing fill.
        entry_fee, exit_fee: the shares of the two fills' fees that belong to this quantity.
        entry_order_id, exit_order_id: the orders of the two fills.
    """

    symbol: str
    side: Side
    qty: Decimal
    entry_ts: datetime
    entry_price: Decimal
    exit_ts: datetime
    exit_price: Decimal
    entry_fee: Decimal
    exit_fee: Decimal
    entry_order_id: str = ""
    exit_order_id: str = ""

    @property
    def is_long(self) -> bool:
        """True for a long trade."""
        return self.side is Side.BUY

    @property
    def gross_pnl(self) -> Decimal:
        """P&L before fees."""
        with localcontext(LEDGER_CONTEXT):
            return self.side.sign * self.qty * (self.exit_price - self.entry_price)

    @property
    def fees(self) -> Decimal:
        """Entry plus exit fee share."""
        with localcontext(LEDGER_CONTEXT):
            return self.entry_fee + self.exit_fee

    @property
    def pnl(self) -> Decimal:
        """P&L net of fees."""
        with localcontext(LEDGER_CONTEXT):
            return self.gross_pnl - self.fees

    @property
    def return_pct(self) -> Decimal:
        """Net P&L as a fraction of the entry value (rounded to 1e-12)."""
        with localcontext(LEDGER_CONTEXT):
            return (self.pnl / (self.qty * self.entry_price)).quantize(_RATIO_QUANTUM)

    @property
    def holding_time(self) -> timedelta:
        """Time from entry fill to exit fill."""
        return self.exit_ts - self.entry_ts


@dataclass(slots=True)
class Lot:
    """An open piece of a position: quantity left, entry price and the unspent entry fee."""

    side: Side
    qty: Decimal
    price: Decimal
    ts: datetime
    fee: Decimal
    order_id: str = ""

    @property
    def signed_qty(self) -> Decimal:
        """``+qty`` for a long lot, ``-qty`` for a short lot."""
        return self.qty if self.side is Side.BUY else -self.qty


class Ledger:
    """Cash, FIFO lots and closed trades of one book (any number of symbols, one cash pool).

    Args:
        initial_cash: starting cash, ``>= 0``.

    Raises:
        ValidationError: ``initial_cash`` is negative or not finite.
    """

    def __init__(self, initial_cash: Decimal) -> None:
        cash = Decimal(initial_cash)
        if not cash.is_finite() or cash < 0:
            raise ValidationError(
                f"initial_cash must be a finite number >= 0, found {initial_cash}"
            )
        self.initial_cash = cash
        self.cash = cash
        self.realised_pnl = _ZERO
        self.fees_paid = _ZERO
        self.trades: list[Trade] = []
        self.fills: list[Fill] = []
        self._lots: dict[str, deque[Lot]] = {}

    # -- queries -----------------------------------------------------------------------------

    def position(self, symbol: str) -> Decimal:
        """Signed quantity held in ``symbol``."""
        with localcontext(LEDGER_CONTEXT):
            return sum((lot.signed_qty for lot in self._lots.get(symbol, ())), _ZERO)

    @property
    def positions(self) -> dict[str, Decimal]:
        """Signed quantity per symbol with an open position."""
        return {s: self.position(s) for s, lots in self._lots.items() if lots}

    def open_lots(self, symbol: str) -> tuple[Lot, ...]:
        """Open lots of ``symbol``, oldest first (copies)."""
        return tuple(
            Lot(lot.side, lot.qty, lot.price, lot.ts, lot.fee, lot.order_id)
            for lot in self._lots.get(symbol, ())
        )

    def _mark(self, marks: Mapping[str, Decimal], symbol: str) -> Decimal:
        try:
            return Decimal(marks[symbol])
        except KeyError:
            raise ValidationError(f"no mark price for open position in {symbol!r}") from None

    def market_value(self, marks: Mapping[str, Decimal]) -> Decimal:
        """Signed value of all open positions at ``marks`` (symbol -> price)."""
        with localcontext(LEDGER_CONTEXT):
            total = _ZERO
            for symbol, lots in self._lots.items():
                if lots:
                    mark = self._mark(marks, symbol)
                    total += sum((lot.signed_qty for lot in lots), _ZERO) * mark
            return total

    def equity(self, marks: Mapping[str, Decimal]) -> Decimal:
        """Cash plus marked positions."""
        with localcontext(LEDGER_CONTEXT):
            return self.cash + self.market_value(marks)

    def unrealised_pnl(self, marks: Mapping[str, Decimal]) -> Decimal:
        """P&L of the open lots at ``marks``, before fees."""
        with localcontext(LEDGER_CONTEXT):
            total = _ZERO
            for symbol, lots in self._lots.items():
                for lot in lots:
                    total += lot.signed_qty * (self._mark(marks, symbol) - lot.price)
            return total

    @property
    def open_fees(self) -> Decimal:
        """Entry fees already paid for lots still open."""
        with localcontext(LEDGER_CONTEXT):
            return sum((lot.fee for lots in self._lots.values() for lot in lots), _ZERO)

    def check_invariant(self, marks: Mapping[str, Decimal]) -> Decimal:
        """Verify the accounting identity exactly; return the equity.

        Raises:
            LedgerInvariantError: cash + marked positions differs from
                initial cash + realised P&L + unrealised P&L − open entry fees, or the trades'
                net P&L does not sum to the realised P&L.
        """
        with localcontext(LEDGER_CONTEXT):
            equity = self.equity(marks)
            rebuilt = (
                self.initial_cash + self.realised_pnl + self.unrealised_pnl(marks) - self.open_fees
            )
            if equity != rebuilt:
                raise LedgerInvariantError(
                    f"cash + marked positions = {equity} but initial + realised + unrealised - "
                    f"open fees = {rebuilt}"
                )
            trade_sum = sum((t.pnl for t in self.trades), _ZERO)
            if trade_sum != self.realised_pnl:
                raise LedgerInvariantError(
                    f"trades' net P&L sums to {trade_sum}, realised P&L is {self.realised_pnl}"
                )
            return equity

    # -- updates -----------------------------------------------------------------------------

    def apply(self, fill: Fill) -> list[Trade]:
        """Book ``fill``: move cash, close opposite lots FIFO, open a lot with the rest.

        Returns:
            The trades this fill closed (possibly none).
        """
        closed: list[Trade] = []
        with localcontext(LEDGER_CONTEXT):
            self.cash += fill.cash_delta
            self.fees_paid += fill.fee
            self.fills.append(fill)
            lots = self._lots.setdefault(fill.symbol, deque())
            remaining = fill.qty
            fee_left = fill.fee
            while remaining > 0 and lots and lots[0].side is not fill.side:
                lot = lots[0]
                piece = min(remaining, lot.qty)
                if piece == remaining:
                    exit_fee = fee_left
                else:
                    exit_fee = (fill.fee * piece / fill.qty).quantize(_FEE_QUANTUM)
                if piece == lot.qty:
                    entry_fee = lot.fee
                else:
                    entry_fee = (lot.fee * piece / lot.qty).quantize(_FEE_QUANTUM)
                trade = Trade(
                    symbol=fill.symbol,
                    side=lot.side,
                    qty=piece,
                    entry_ts=lot.ts,
                    entry_price=lot.price,
                    exit_ts=fill.ts,
                    exit_price=fill.price,
                    entry_fee=entry_fee,
                    exit_fee=exit_fee,
                    entry_order_id=lot.order_id,
                    exit_order_id=fill.order_id,
                )
                closed.append(trade)
                self.realised_pnl += trade.pnl
                lot.qty -= piece
                lot.fee -= entry_fee
                if lot.qty == 0:
                    lots.popleft()
                remaining -= piece
                fee_left -= exit_fee
            if remaining > 0:
                lots.append(Lot(fill.side, remaining, fill.price, fill.ts, fee_left, fill.order_id))
        self.trades.extend(closed)
        return closed
