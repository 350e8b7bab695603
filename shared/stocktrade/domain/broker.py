"""What a real (paper or live) broker says: accepted orders, their fills, account and positions.

A real broker works asynchronously: submitting an order returns it *accepted*; it fills
later, possibly in parts. The broker reports each order's cumulative state (quantity filled so
far and the average price of those fills), so a poller turns two successive states of one
order into the :class:`~stocktrade.domain.orders.Fill` that happened between them
(:meth:`BrokerOrder.fill_since`). Fill ids are derived from the broker's order id and the
cumulative quantity, so polling the same state twice yields the same fill id and idempotent
handlers absorb the copy.

Money and quantities are :class:`~decimal.Decimal`, timestamps aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from stocktrade.domain.orders import Fill, Order, OrderType, Side
from stocktrade.errors import ValidationError

__all__ = [
    "BrokerAccount",
    "BrokerOrder",
    "BrokerOrderStatus",
    "BrokerPosition",
    "OrderRequest",
    "TimeInForce",
]

_ZERO = Decimal(0)
# Price of the part filled between two polls: exact when one poll sees the whole fill (the
# usual case for a market order); otherwise a quotient, rounded to 1e-9 (the cash error per
# partial fill is then below qty * 1e-9).
_PARTIAL_PRICE_QUANTUM = Decimal("1e-9")


class TimeInForce(StrEnum):
    """How long an order stays working (``day``: until the close of the trading day)."""

    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"
    OPG = "opg"
    CLS = "cls"


class BrokerOrderStatus(StrEnum):
    """Where an order is at the broker, in broker-independent terms.

    The broker's own word is kept in :attr:`BrokerOrder.venue_status`.
    """

    OPEN = "open"  # accepted and working (or waiting to work); nothing filled yet
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"  # canceled, expired or replaced; may have filled in part
    REJECTED = "rejected"

    @property
    def terminal(self) -> bool:
        """True when the order will never fill any further."""
        return self in (
            BrokerOrderStatus.FILLED,
            BrokerOrderStatus.CANCELED,
            BrokerOrderStatus.REJECTED,
        )


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A market order to send to a real broker.

    Exactly one of ``qty`` (units) and ``notional`` (cash amount, fractional shares) is set.

    Attributes:
        client_order_id: idempotency key; resubmitting the same id never opens a second order.
        symbol: instrument.
        side: buy or sell.
        qty: unsigned quantity, ``> 0``, or ``None``.
        notional: unsigned cash amount, ``> 0``, or ``None``.
        order_type: market.
        time_in_force: ``day`` by default.
    """

    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal | None = None
    notional: Decimal | None = None
    order_type: OrderType = OrderType.MARKET
    time_in_force: TimeInForce = TimeInForce.DAY

    def __post_init__(self) -> None:
        problems = []
        if not self.client_order_id:
            problems.append("client_order_id is empty")
        if not self.symbol:
            problems.append("symbol is empty")
        if (self.qty is None) == (self.notional is None):
            problems.append(
                f"exactly one of qty and notional must be set, found qty={self.qty} "
                f"and notional={self.notional}"
            )
        for name, value in (("qty", self.qty), ("notional", self.notional)):
            if value is not None and not (value.is_finite() and value > _ZERO):
                problems.append(f"{name} must be > 0, found {value}")
        if problems:
            raise ValidationError(
                f"invalid order request {self.client_order_id!r}: " + "; ".join(problems)
            )

    @classmethod
    def from_order(cls, order: Order, time_in_force: TimeInForce = TimeInForce.DAY) -> OrderRequest:
        """The request for a sized domain order (``order.qty > 0``).

        Raises:
            ValidationError: the order has no quantity (target orders must be sized first).
        """
        if order.qty <= _ZERO:
            raise ValidationError(
                f"order {order.client_order_id!r} needs qty > 0 to go to a broker, found "
                f"{order.qty} (size target orders before submitting)"
            )
        return cls(
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            qty=order.qty,
            order_type=order.order_type,
            time_in_force=time_in_force,
        )


@dataclass(frozen=True, slots=True)
class BrokerOrder:
    """One order as the broker last reported it (cumulative fill state).

    Attributes:
        broker_order_id: the broker's id of the order.
        client_order_id: our idempotency key.
        symbol: instrument.
        side: buy or sell.
        qty: ordered quantity (``None`` for a notional order).
        notional: ordered cash amount (``None`` for a quantity order).
        filled_qty: quantity filled so far (``0`` before any fill).
        filled_avg_price: average price of the fills so far (``None`` before any fill).
        status: broker-independent status.
        venue_status: the broker's own status word (e.g. Alpaca's ``pending_new``).
        order_type: market.
        time_in_force: how long the order works.
        created_at: when the broker created the order.
        updated_at: when it last changed (``None`` if never).
        submitted_at: when it went to the market (``None`` if not yet).
        filled_at: when it filled completely (``None`` if not).
    """

    broker_order_id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal | None
    notional: Decimal | None
    filled_qty: Decimal
    filled_avg_price: Decimal | None
    status: BrokerOrderStatus
    venue_status: str
    order_type: OrderType
    time_in_force: TimeInForce
    created_at: datetime
    updated_at: datetime | None = None
    submitted_at: datetime | None = None
    filled_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.filled_qty < _ZERO:
            raise ValidationError(
                f"broker order {self.broker_order_id}: filled_qty must be >= 0, "
                f"found {self.filled_qty}"
            )
        if self.filled_qty > _ZERO and (
            self.filled_avg_price is None or self.filled_avg_price <= _ZERO
        ):
            raise ValidationError(
                f"broker order {self.broker_order_id}: filled_qty {self.filled_qty} needs a "
                f"positive filled_avg_price, found {self.filled_avg_price}"
            )

    def fill_id(self, cumulative_qty: Decimal | None = None) -> str:
        """Deterministic id of the fill that brought the order to ``cumulative_qty``."""
        q = self.filled_qty if cumulative_qty is None else cumulative_qty
        return f"{self.broker_order_id}:{_plain(q)}"

    def fill_since(
        self,
        prev_filled_qty: Decimal = _ZERO,
        prev_avg_price: Decimal | None = None,
        *,
        fee: Decimal = _ZERO,
    ) -> Fill | None:
        """The fill between a previously seen state of this order and this one.

        Args:
            prev_filled_qty: cumulative quantity filled when last seen (``0``: never seen).
            prev_avg_price: average fill price when last seen (needed when
                ``prev_filled_qty > 0``).
            fee: commission of this fill (``0`` for commission-free brokers).

        Returns:
            The new fill (its ``order_id`` is the ``client_order_id``), or ``None`` when
            nothing more filled.

        Raises:
            ValidationError: the previous state is ahead of this one (an older report) or
                lacks its average price.
        """
        if self.filled_qty < prev_filled_qty:
            raise ValidationError(
                f"broker order {self.broker_order_id}: filled_qty went back from "
                f"{prev_filled_qty} to {self.filled_qty} (an out-of-date report?)"
            )
        delta = self.filled_qty - prev_filled_qty
        if delta == _ZERO:
            return None
        avg = self.filled_avg_price
        assert avg is not None  # guaranteed by __post_init__ since filled_qty > 0
        if prev_filled_qty == _ZERO:
            price = avg
        else:
            if prev_avg_price is None or prev_avg_price <= _ZERO:
                raise ValidationError(
                    f"broker order {self.broker_order_id}: previous filled_qty "
                    f"{prev_filled_qty} needs its average price, found {prev_avg_price}"
                )
            price = ((avg * self.filled_qty - prev_avg_price * prev_filled_qty) / delta).quantize(
                _PARTIAL_PRICE_QUANTUM
            )
        when = (
            self.filled_at
            if self.status is BrokerOrderStatus.FILLED and self.filled_at is not None
            else self.updated_at or self.submitted_at or self.created_at
        )
        return Fill(
            fill_id=self.fill_id(),
            order_id=self.client_order_id,
            symbol=self.symbol,
            side=self.side,
            qty=delta,
            price=price,
            fee=fee,
            ts=when,
        )


@dataclass(frozen=True, slots=True)
class BrokerAccount:
    """The account's money as the broker reports it.

    Attributes:
        account_id: the broker's account id.
        status: the broker's account status word (``ACTIVE``, ...).
        currency: ISO currency of the amounts.
        cash: settled plus unsettled cash.
        equity: cash plus the market value of positions.
        buying_power: what can be spent on new orders now.
        trading_blocked: the broker refuses new orders on this account.
    """

    account_id: str
    status: str
    currency: str
    cash: Decimal
    equity: Decimal
    buying_power: Decimal
    trading_blocked: bool = False


@dataclass(frozen=True, slots=True)
class BrokerPosition:
    """One open position as the broker reports it.

    Attributes:
        symbol: instrument.
        qty: signed quantity (negative when short).
        avg_entry_price: average entry price.
        market_value: signed value at the current price (``None`` if not priced).
        current_price: last price (``None`` if not priced).
        unrealized_pl: unrealised profit or loss (``None`` if not priced).
    """

    symbol: str
    qty: Decimal
    avg_entry_price: Decimal
    market_value: Decimal | None = None
    current_price: Decimal | None = None
    unrealized_pl: Decimal | None = None


def _plain(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros (``Decimal("1.50") -> "1.5"``)."""
    return format(value.normalize(), "f")
