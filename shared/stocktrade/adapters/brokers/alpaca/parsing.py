"""Alpaca Trading API v2 JSON <-> domain values (pure functions, no I/O).

Alpaca sends money and quantities as decimal strings (``"10"``, ``"150.2345"``) and times
as RFC 3339 in UTC with up to nanosecond fractions (``"2024-01-02T14:30:00.123456789Z"``);
they become :class:`~decimal.Decimal` and aware UTC :class:`~datetime.datetime` (fractions
beyond microseconds are dropped). A response that does not fit the documented schema raises
:class:`AlpacaSchemaError` naming the field, what was expected and what was found.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from stocktrade.domain.broker import (
    BrokerAccount,
    BrokerOrder,
    BrokerOrderStatus,
    BrokerPosition,
    OrderRequest,
    TimeInForce,
)
from stocktrade.domain.orders import OrderType, Side
from stocktrade.errors import PermanentError, ValidationError

__all__ = [
    "TERMINAL_STATUSES",
    "AlpacaSchemaError",
    "ErrorBody",
    "is_duplicate_client_order_id",
    "loads",
    "order_request_body",
    "parse_account",
    "parse_error_body",
    "parse_order",
    "parse_position",
    "parse_positions",
    "parse_timestamp",
    "request_mismatches",
]

# Alpaca statuses after which an order never changes again, and what they mean here.
TERMINAL_STATUSES: dict[str, BrokerOrderStatus] = {
    "filled": BrokerOrderStatus.FILLED,
    "canceled": BrokerOrderStatus.CANCELED,
    "expired": BrokerOrderStatus.CANCELED,
    "replaced": BrokerOrderStatus.CANCELED,
    "rejected": BrokerOrderStatus.REJECTED,
}
# Working statuses (new, accepted, pending_new, accepted_for_bidding, calculated, held,
# pending_cancel, pending_replace, done_for_day, stopped, suspended, partially_filled) map
# to OPEN or PARTIALLY_FILLED by the quantity filled so far.

_MAX_MESSAGE = 500


class AlpacaSchemaError(PermanentError):
    """An Alpaca response does not fit the documented schema."""


def loads(body: bytes) -> Any:
    """Parse a JSON body with exact decimals (JSON numbers become ``Decimal``)."""
    return json.loads(body, parse_float=Decimal)


# -- field readers --------------------------------------------------------------------------
def _field(obj: Mapping[str, Any], name: str, what: str) -> Any:
    if name not in obj:
        raise AlpacaSchemaError(f"Alpaca {what} has no {name!r} field; found {sorted(obj)}")
    return obj[name]


def _str(obj: Mapping[str, Any], name: str, what: str) -> str:
    value = _field(obj, name, what)
    if not isinstance(value, str) or not value:
        raise AlpacaSchemaError(f"Alpaca {what} field {name!r}: expected text, found {value!r}")
    return value


def _decimal(obj: Mapping[str, Any], name: str, what: str, *, optional: bool = False) -> Any:
    value = obj.get(name) if optional else _field(obj, name, what)
    if value is None or value == "":
        if optional:
            return None
        raise AlpacaSchemaError(f"Alpaca {what} field {name!r}: expected a number, found null")
    if isinstance(value, bool):
        raise AlpacaSchemaError(f"Alpaca {what} field {name!r}: expected a number, found {value}")
    try:
        number = Decimal(value) if isinstance(value, str | Decimal | int) else Decimal(repr(value))
    except (InvalidOperation, TypeError, ValueError):
        number = None
    if number is None or not number.is_finite():
        raise AlpacaSchemaError(
            f"Alpaca {what} field {name!r}: expected a decimal number, found {value!r}"
        )
    return number


def parse_timestamp(value: Any, *, name: str = "timestamp", what: str = "response") -> Any:
    """An RFC 3339 time as an aware UTC datetime (``None`` stays ``None``).

    Raises:
        AlpacaSchemaError: the value is not an RFC 3339 time with an offset.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise AlpacaSchemaError(f"Alpaca {what} field {name!r}: expected a time, found {value!r}")
    text = value
    # Python reads at most microseconds: drop any further fraction digits (nanoseconds).
    dot = text.find(".")
    if dot != -1:
        end = dot + 1
        while end < len(text) and text[end].isdigit():
            end += 1
        if end - dot - 1 > 6:
            text = text[: dot + 7] + text[end:]
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        ts = None
    if ts is None or ts.tzinfo is None:
        raise AlpacaSchemaError(
            f"Alpaca {what} field {name!r}: expected an RFC 3339 time with offset, found {value!r}"
        )
    return ts.astimezone(UTC)


def _enum(enum: Any, obj: Mapping[str, Any], name: str, what: str) -> Any:
    value = _field(obj, name, what)
    try:
        return enum(value)
    except ValueError:
        expected = ", ".join(str(e.value) for e in enum)
        raise AlpacaSchemaError(
            f"Alpaca {what} field {name!r}: expected one of {expected}, found {value!r}"
        ) from None


def _object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise AlpacaSchemaError(
            f"Alpaca {what}: expected a JSON object, found {type(data).__name__}"
        )
    return data


# -- responses ------------------------------------------------------------------------------
def parse_order(data: Any) -> BrokerOrder:
    """An Alpaca order object as a :class:`~stocktrade.domain.broker.BrokerOrder`.

    Raises:
        AlpacaSchemaError: a field is missing or malformed, or the order is not a market
            order (the only type this adapter sends).
    """
    obj = _object(data, "order")
    what = f"order {obj.get('id')!r}"
    venue_status = _str(obj, "status", what)
    filled_qty = _decimal(obj, "filled_qty", what, optional=True) or Decimal(0)
    if venue_status in TERMINAL_STATUSES:
        status = TERMINAL_STATUSES[venue_status]
    elif filled_qty > 0:
        status = BrokerOrderStatus.PARTIALLY_FILLED
    else:
        status = BrokerOrderStatus.OPEN
    try:
        return BrokerOrder(
            broker_order_id=_str(obj, "id", what),
            client_order_id=_str(obj, "client_order_id", what),
            symbol=_str(obj, "symbol", what),
            side=_enum(Side, obj, "side", what),
            qty=_decimal(obj, "qty", what, optional=True),
            notional=_decimal(obj, "notional", what, optional=True),
            filled_qty=filled_qty,
            filled_avg_price=_decimal(obj, "filled_avg_price", what, optional=True),
            status=status,
            venue_status=venue_status,
            order_type=_enum(OrderType, obj, "type", what),
            time_in_force=_enum(TimeInForce, obj, "time_in_force", what),
            created_at=parse_timestamp(
                _field(obj, "created_at", what), name="created_at", what=what
            ),
            updated_at=parse_timestamp(obj.get("updated_at"), name="updated_at", what=what),
            submitted_at=parse_timestamp(obj.get("submitted_at"), name="submitted_at", what=what),
            filled_at=parse_timestamp(obj.get("filled_at"), name="filled_at", what=what),
        )
    except ValidationError as exc:
        raise AlpacaSchemaError(f"Alpaca {what} is inconsistent: {exc}") from exc


def parse_account(data: Any) -> BrokerAccount:
    """An Alpaca account object as a :class:`~stocktrade.domain.broker.BrokerAccount`."""
    obj = _object(data, "account")
    what = "account"
    return BrokerAccount(
        account_id=_str(obj, "id", what),
        status=_str(obj, "status", what),
        currency=obj.get("currency") or "USD",
        cash=_decimal(obj, "cash", what),
        equity=_decimal(obj, "equity", what),
        buying_power=_decimal(obj, "buying_power", what),
        trading_blocked=bool(obj.get("trading_blocked", False))
        or bool(obj.get("account_blocked", False)),
    )


def parse_position(data: Any) -> BrokerPosition:
    """An Alpaca position object as a :class:`~stocktrade.domain.broker.BrokerPosition`.

    Alpaca reports ``qty`` negative for a short position (``side`` ``"short"``); a positive
    quantity marked short is negated so the sign always says the direction.
    """
    obj = _object(data, "position")
    what = f"position {obj.get('symbol')!r}"
    qty = _decimal(obj, "qty", what)
    if obj.get("side") == "short" and qty > 0:
        qty = -qty
    return BrokerPosition(
        symbol=_str(obj, "symbol", what),
        qty=qty,
        avg_entry_price=_decimal(obj, "avg_entry_price", what),
        market_value=_decimal(obj, "market_value", what, optional=True),
        current_price=_decimal(obj, "current_price", what, optional=True),
        unrealized_pl=_decimal(obj, "unrealized_pl", what, optional=True),
    )


def parse_positions(data: Any) -> list[BrokerPosition]:
    """The ``GET /v2/positions`` array."""
    if not isinstance(data, list):
        raise AlpacaSchemaError(
            f"Alpaca positions: expected a JSON array, found {type(data).__name__}"
        )
    return [parse_position(item) for item in data]


# -- requests -------------------------------------------------------------------------------
def order_request_body(request: OrderRequest) -> dict[str, str]:
    """The ``POST /v2/orders`` body; quantities go as decimal strings, as Alpaca documents."""
    body = {
        "symbol": request.symbol,
        "side": request.side.value,
        "type": request.order_type.value,
        "time_in_force": request.time_in_force.value,
        "client_order_id": request.client_order_id,
    }
    if request.qty is not None:
        body["qty"] = format(request.qty, "f")
    else:
        assert request.notional is not None  # OrderRequest guarantees one of the two
        body["notional"] = format(request.notional, "f")
    return body


def request_mismatches(request: OrderRequest, order: BrokerOrder) -> list[str]:
    """How an order found under ``request.client_order_id`` differs from ``request``."""
    problems = []
    if order.client_order_id != request.client_order_id:
        problems.append(f"client_order_id {order.client_order_id!r} != {request.client_order_id!r}")
    if order.symbol != request.symbol:
        problems.append(f"symbol {order.symbol!r} != {request.symbol!r}")
    if order.side is not request.side:
        problems.append(f"side {order.side.value!r} != {request.side.value!r}")
    if request.qty is not None and order.qty != request.qty:
        problems.append(f"qty {order.qty} != {request.qty}")
    if request.notional is not None and order.notional != request.notional:
        problems.append(f"notional {order.notional} != {request.notional}")
    return problems


# -- errors ---------------------------------------------------------------------------------
class ErrorBody:
    """Alpaca's error body ``{"code": 40010001, "message": "..."}`` (or raw text)."""

    __slots__ = ("code", "message")

    def __init__(self, code: int | None, message: str) -> None:
        self.code = code
        self.message = message


def parse_error_body(body: bytes, reason: str = "") -> ErrorBody:
    """Alpaca's error code and message; a non-JSON body (a proxy's page) becomes the text."""
    try:
        data = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        data = None
    if isinstance(data, Mapping):
        code = data.get("code")
        message = data.get("message")
        return ErrorBody(
            code if isinstance(code, int) and not isinstance(code, bool) else None,
            str(message)[:_MAX_MESSAGE] if message else (reason or "no message"),
        )
    text = body.decode("utf-8", "replace").strip()[:_MAX_MESSAGE]
    return ErrorBody(None, text or reason or "no message")


def is_duplicate_client_order_id(status: int, message: str) -> bool:
    """True for Alpaca's answer to a reused ``client_order_id`` (422, "... must be unique")."""
    lowered = message.lower()
    return status == 422 and "client_order_id" in lowered and "unique" in lowered
