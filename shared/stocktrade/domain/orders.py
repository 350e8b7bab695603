"""Orders and fills: what a strategy asks for and what the broker did.

Money and quantities are :class:`~decimal.Decimal`. Quantities are unsigned; the side says the
direction (:attr:`Fill.signed_qty` gives the signed change of the position).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from stocktrade.errors import ValidationError

__all__ = ["Execution", "Fill", "Order", "OrderStatus", "OrderType", "Side", "to_decimal"]

_ZERO = Decimal(0)


class Side(StrEnum):
    """Direction of an order or fill."""

    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        """``+1`` for a buy, ``-1`` for a sell."""
        return 1 if self is Side.BUY else -1


class OrderType(StrEnum):
    """Order types the simulated broker understands (market only, for now)."""

    MARKET = "market"


class OrderStatus(StrEnum):
    """Lifecycle of an order."""

    PENDING = "pending"  # accepted, waiting for its fill bar
    FILLED = "filled"
    REJECTED = "rejected"  # sized to zero shares (e.g. not enough cash for one share)
    EXPIRED = "expired"  # the data ended before the fill bar


@dataclass(frozen=True, slots=True)
class Order:
    """A market order.

    Attributes:
        client_order_id: idempotency key, unique per agent (the live chain keys writes on it).
        symbol: instrument.
        side: buy or sell.
        qty: unsigned quantity; ``0`` only for an order the broker sized to nothing.
        ts: decision time (the bar whose close produced the order), aware UTC.
        order_type: market.
        target_frac: the target position (fraction of equity) the order was sized from, if any.
        status: where the order is in its lifecycle.
        reason: human-readable why (strategy signal, kill switch, end of data, ...).
    """

    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    ts: datetime
    order_type: OrderType = OrderType.MARKET
    target_frac: Decimal | None = None
    status: OrderStatus = OrderStatus.PENDING
    reason: str = ""

    def __post_init__(self) -> None:
        if not self.client_order_id:
            raise ValidationError("order needs a client_order_id, found an empty string")
        if self.qty < _ZERO:
            raise ValidationError(
                f"order qty must be >= 0 (the side gives the sign), found {self.qty}"
            )


@dataclass(frozen=True, slots=True)
class Fill:
    """An execution of (part of) an order.

    Attributes:
        fill_id: unique id of this execution.
        order_id: the ``client_order_id`` it fills.
        symbol: instrument.
        side: buy or sell.
        qty: unsigned quantity, ``> 0``.
        price: execution price per unit after slippage, ``> 0``.
        fee: commission paid in cash, ``>= 0``.
        ts: execution time, aware UTC.
    """

    fill_id: str
    order_id: str
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal
    ts: datetime

    def __post_init__(self) -> None:
        problems = []
        if self.qty <= _ZERO:
            problems.append(f"qty must be > 0, found {self.qty}")
        if self.price <= _ZERO:
            problems.append(f"price must be > 0, found {self.price}")
        if self.fee < _ZERO:
            problems.append(f"fee must be >= 0, found {self.fee}")
        if problems:
            raise ValidationError(f"invalid fill {self.fill_id!r}: " + "; ".join(problems))

    @property
    def signed_qty(self) -> Decimal:
        """Position change: ``+qty`` for a buy, ``-qty`` for a sell."""
        return self.qty if self.side is Side.BUY else -self.qty

    @property
    def cash_delta(self) -> Decimal:
        """Change of cash caused by this fill (fees included)."""
        return -self.signed_qty * self.price - self.fee


def to_decimal(x: float) -> Decimal:
    """Decimal of a float64 from its shortest repr (integers without exponent).

    Round-trips exactly (``float(to_decimal(x)) == x``), so fills built from kernel floats
    carry the kernel's values exactly.
    """
    if x.is_integer() and abs(x) < 2**53:
        return Decimal(int(x))
    return Decimal(repr(x))


@dataclass(frozen=True, slots=True)
class Execution:
    """What a broker did with one order.

    Attributes:
        order: the order in its final state (FILLED, REJECTED or EXPIRED).
        fill: the fill, if any quantity traded.
        flags: risk flags raised while sizing (bit mask of
            :class:`stocktrade.domain.risk.RiskCode`).
        bar_index: index of the bar the order was decided on.
        fill_bar_index: index of the bar it filled on (``-1`` if not filled).
        kind: why it was placed (0 strategy, 1 kill switch, 2 end of data).
        target: target position it was sized from (NaN for quantity orders).
        traded_qty: signed quantity traded (float, as computed).
        price: execution price (float, NaN if never priced).
        fee: commission (float).
        pos_after: position right after the fill (float; unchanged if nothing filled).
        cash_after: the sizing kernel's float cash right after the fill (NaN if not priced).
    """

    order: Order
    fill: Fill | None
    flags: int
    bar_index: int
    fill_bar_index: int
    kind: int
    target: float
    traded_qty: float
    price: float
    fee: float
    pos_after: float
    cash_after: float
