"""Risk limits and the machine-readable record of every rejection or adjustment.

The checks themselves run in :mod:`stocktrade.sim.kernels` (one implementation for the backtest
fast path, the bar-by-bar path, the RL environment and the live chain); they report what they
did as a bit mask of :class:`RiskCode` values, which :func:`decode_flags` and
:func:`describe` turn into :class:`RiskEvent` records with a human reason for the decision log.

Limits and their semantics:

* ``warmup_bars``: no order is placed before bar index ``warmup_bars`` (counted from the first
  bar the book sees).
* ``allow_short``: long-only when false; a negative target is clipped to flat.
* ``min_bars_between_orders`` / ``max_orders_per_day``: order throttle. A rejected target
  change leaves the previous target in force; the strategy may ask again on a later bar.
* ``max_position_qty`` / ``max_notional``: caps on the absolute position after a fill
  (notional at the fill's reference price); the order is reduced to fit.
* ``max_daily_loss`` (cash) / ``max_daily_loss_pct`` (fraction of the day's opening equity):
  kill switch. When the equity marked at a bar's close has fallen this much since the last
  close of the previous day, the book is flattened (bypassing the throttle) and halted for the
  rest of the run; every later order is rejected with ``HALTED``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import IntEnum
from typing import Any

from stocktrade.errors import ValidationError

__all__ = [
    "UNLIMITED_COUNT",
    "RiskCode",
    "RiskEvent",
    "RiskLimits",
    "RiskResult",
    "decode_flags",
    "describe",
    "events_from_flags",
    "merge_flags",
]

#: Stand-in for "no limit" on integer counts inside the float/int kernels.
UNLIMITED_COUNT = 1 << 62


class RiskCode(IntEnum):
    """Why an order was rejected or adjusted. The value is the bit index in kernel flag masks."""

    WARMUP = 0
    HALTED = 1
    KILL_SWITCH = 2
    SHORT_NOT_ALLOWED = 3
    THROTTLE_MIN_BARS = 4
    THROTTLE_MAX_PER_DAY = 5
    MAX_POSITION = 6
    MAX_NOTIONAL = 7
    INSUFFICIENT_CASH = 8
    NO_NEXT_BAR = 9

    @property
    def flag(self) -> int:
        """The bit of this code in a kernel flag mask."""
        return 1 << int(self)

    @property
    def is_rejection(self) -> bool:
        """True if the code means the order was not placed (or filled nothing)."""
        return self not in (
            RiskCode.SHORT_NOT_ALLOWED,
            RiskCode.MAX_POSITION,
            RiskCode.MAX_NOTIONAL,
        )


def decode_flags(flags: int) -> list[RiskCode]:
    """Codes set in a kernel flag mask, in code order."""
    return [code for code in RiskCode if flags & code.flag]


def _opt_dec(value: Any, name: str) -> Decimal | None:
    if value is None:
        return None
    try:
        out = value if isinstance(value, Decimal) else Decimal(str(value))
    except ArithmeticError as exc:
        raise ValidationError(f"{name} must be a number or null, found {value!r}") from exc
    if not out.is_finite():
        raise ValidationError(f"{name} must be finite, found {value!r}")
    return out


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Pre-trade risk limits of one book. ``None`` means no limit.

    Raises:
        ValidationError: a limit is negative or zero where that makes no sense.
    """

    max_position_qty: Decimal | None = None
    max_notional: Decimal | None = None
    max_daily_loss: Decimal | None = None
    max_daily_loss_pct: Decimal | None = None
    min_bars_between_orders: int = 0
    max_orders_per_day: int | None = None
    warmup_bars: int = 0
    allow_short: bool = False

    def __post_init__(self) -> None:
        problems = []
        for name in ("max_position_qty", "max_notional", "max_daily_loss", "max_daily_loss_pct"):
            value = _opt_dec(getattr(self, name), name)
            object.__setattr__(self, name, value)
            if value is not None and value <= 0:
                problems.append(f"{name} must be > 0 or null, found {value}")
        if self.max_daily_loss_pct is not None and self.max_daily_loss_pct > 1:
            problems.append(
                f"max_daily_loss_pct is a fraction (0.05 = 5 %), must be <= 1, found "
                f"{self.max_daily_loss_pct}"
            )
        for name in ("min_bars_between_orders", "warmup_bars"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append(f"{name} must be an integer >= 0, found {value!r}")
        mopd = self.max_orders_per_day
        if mopd is not None and (not isinstance(mopd, int) or isinstance(mopd, bool) or mopd < 1):
            problems.append(f"max_orders_per_day must be an integer >= 1 or null, found {mopd!r}")
        if not isinstance(self.allow_short, bool):
            problems.append(f"allow_short must be a bool, found {self.allow_short!r}")
        if problems:
            raise ValidationError("invalid risk limits: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RiskLimits:
        """Build from a JSON-style dict; unknown keys are errors."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValidationError(
                f"unknown risk limit fields {sorted(unknown)}; expected a subset of "
                f"{sorted(cls.__dataclass_fields__)}"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (Decimals as strings)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = str(value) if isinstance(value, Decimal) else value
        return out

    def kernel_args(self) -> dict[str, Any]:
        """Limits as the plain floats/ints the kernels take (``inf`` / a huge count = no limit)."""
        inf = float("inf")

        def f(value: Decimal | None) -> float:
            return inf if value is None else float(value)

        return {
            "warmup_bars": self.warmup_bars,
            "allow_short": self.allow_short,
            "min_bars_between_orders": self.min_bars_between_orders,
            "max_orders_per_day": (
                UNLIMITED_COUNT if self.max_orders_per_day is None else self.max_orders_per_day
            ),
            "max_qty": f(self.max_position_qty),
            "max_notional": f(self.max_notional),
            "max_daily_loss": f(self.max_daily_loss),
            "max_daily_loss_frac": f(self.max_daily_loss_pct),
        }


@dataclass(frozen=True, slots=True)
class RiskEvent:
    """One rejection or adjustment, ready for the decision log.

    Attributes:
        code: machine-readable code.
        reason: human-readable explanation with the numbers involved.
        symbol: instrument of the book.
        ts: bar time of the decision or fill it concerns (aware UTC), if known.
        bar_index: index of that bar in the run, if known.
    """

    code: RiskCode
    reason: str
    symbol: str = ""
    ts: datetime | None = None
    bar_index: int | None = None

    @property
    def rejected(self) -> bool:
        """True if the event blocked an order rather than resizing it."""
        return self.code.is_rejection

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "code": self.code.name,
            "reason": self.reason,
            "symbol": self.symbol,
            "ts": None if self.ts is None else self.ts.isoformat(),
            "bar_index": self.bar_index,
        }


@dataclass(frozen=True, slots=True)
class RiskResult:
    """Outcome of the pre-trade check of one decision.

    Attributes:
        desired_target: what the strategy asked for (fraction of equity; NaN = no opinion).
        approved_target: the target in force after the check.
        order_placed: True if the check produced an order (the target changed).
        events: every rejection or adjustment, in code order.
    """

    desired_target: float
    approved_target: float
    order_placed: bool
    events: tuple[RiskEvent, ...] = field(default_factory=tuple)

    @property
    def codes(self) -> list[RiskCode]:
        """Codes of the events."""
        return [e.code for e in self.events]


_REASONS = {
    RiskCode.WARMUP: "no orders during the first {warmup_bars} bars (warm-up)",
    RiskCode.HALTED: "trading halted by the daily-loss kill switch earlier in the run",
    RiskCode.KILL_SWITCH: (
        "daily loss limit hit (limit {max_daily_loss} cash / {max_daily_loss_pct} of the day's "
        "opening equity): flattening and halting"
    ),
    RiskCode.SHORT_NOT_ALLOWED: "book is long-only: short target clipped to flat",
    RiskCode.THROTTLE_MIN_BARS: "throttled: fewer than {min_bars_between_orders} bars since the last order",
    RiskCode.THROTTLE_MAX_PER_DAY: "throttled: already {max_orders_per_day} orders today",
    RiskCode.MAX_POSITION: "position reduced to the max position of {max_position_qty} units",
    RiskCode.MAX_NOTIONAL: "position reduced to the max notional of {max_notional}",
    RiskCode.INSUFFICIENT_CASH: "order sized to nothing: not enough cash for one unit after costs",
    RiskCode.NO_NEXT_BAR: "order expired: the data ends before its fill bar",
}


def describe(code: RiskCode, limits: RiskLimits | None = None) -> str:
    """Human reason for ``code``, filled in with the limits involved."""
    values = (limits or RiskLimits()).to_dict()
    return _REASONS[code].format(**{k: ("none" if v is None else v) for k, v in values.items()})


def events_from_flags(
    flags: int,
    limits: RiskLimits | None = None,
    *,
    symbol: str = "",
    ts: datetime | None = None,
    bar_index: int | None = None,
) -> tuple[RiskEvent, ...]:
    """Turn a kernel flag mask into :class:`RiskEvent` records."""
    return tuple(
        RiskEvent(code, describe(code, limits), symbol=symbol, ts=ts, bar_index=bar_index)
        for code in decode_flags(flags)
    )


def merge_flags(codes: Iterable[RiskCode]) -> int:
    """Inverse of :func:`decode_flags`."""
    out = 0
    for code in codes:
        out |= code.flag
    return out
