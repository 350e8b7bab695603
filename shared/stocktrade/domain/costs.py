"""Trading costs and fill timing: the parameters of every simulated execution.

The arithmetic itself lives in one place, :mod:`stocktrade.sim.kernels`, so the backtest fast
path, the bar-by-bar path, the paper broker and the RL environment all charge the same fees.
This module only holds the validated parameters.

Conventions (applied by the kernels):

* execution price: a buy pays ``price * (1 + slippage_bps/1e4) + slippage_range_frac *
  (high - low)``; a sell receives ``price * (1 - slippage_bps/1e4) - slippage_range_frac *
  (high - low)`` (floored at a tiny positive price), where ``high``/``low`` are the fill bar's.
* commission: ``|qty| * exec_price * commission_bps/1e4 + |qty| * commission_per_share``,
  charged on every fill (entry and exit), paid from cash.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from stocktrade.errors import ValidationError

__all__ = ["CostModel", "FillRule"]


class FillRule(StrEnum):
    """When a market order decided on bar ``t`` fills."""

    NEXT_OPEN = "next_open"  # at bar t+1's open (no look-ahead; the default)
    CLOSE = "close"  # at bar t's close (the price the decision saw)


def _dec(value: Any, name: str) -> Decimal:
    try:
        out = value if isinstance(value, Decimal) else Decimal(str(value))
    except ArithmeticError as exc:
        raise ValidationError(f"{name} must be a number, found {value!r}") from exc
    if not out.is_finite():
        raise ValidationError(f"{name} must be finite, found {value!r}")
    return out


@dataclass(frozen=True, slots=True)
class CostModel:
    """Commission and slippage.

    Attributes:
        commission_bps: commission in basis points of traded value (10 = 0.1 %).
        commission_per_share: commission per unit traded, in cash.
        slippage_bps: adverse price move in basis points of the fill price.
        slippage_range_frac: adverse price move as a fraction of the fill bar's high-low range.

    Raises:
        ValidationError: a value is negative, not finite, or absurd (>= 100 % of the price).
    """

    commission_bps: Decimal = Decimal(0)
    commission_per_share: Decimal = Decimal(0)
    slippage_bps: Decimal = Decimal(0)
    slippage_range_frac: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        problems = []
        for name in (
            "commission_bps",
            "commission_per_share",
            "slippage_bps",
            "slippage_range_frac",
        ):
            value = _dec(getattr(self, name), name)
            object.__setattr__(self, name, value)
            if value < 0:
                problems.append(f"{name} must be >= 0, found {value}")
        if self.commission_bps >= 10_000:
            problems.append(f"commission_bps must be < 10000 (100 %), found {self.commission_bps}")
        if self.slippage_bps >= 10_000:
            problems.append(f"slippage_bps must be < 10000 (100 %), found {self.slippage_bps}")
        if self.slippage_range_frac > 1:
            problems.append(
                f"slippage_range_frac must be <= 1 (the whole bar range), found "
                f"{self.slippage_range_frac}"
            )
        if problems:
            raise ValidationError("invalid cost model: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CostModel:
        """Build from a JSON-style dict; unknown keys are errors."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValidationError(
                f"unknown cost model fields {sorted(unknown)}; expected a subset of "
                f"{sorted(cls.__dataclass_fields__)}"
            )
        return cls(**{k: _dec(v, k) for k, v in data.items()})

    def to_dict(self) -> dict[str, str]:
        """JSON-safe dict (Decimals as strings)."""
        return {name: str(getattr(self, name)) for name in self.__dataclass_fields__}

    def kernel_args(self) -> tuple[float, float, float, float]:
        """``(commission_bps, commission_per_share, slippage_bps, slippage_range_frac)`` as floats."""
        return (
            float(self.commission_bps),
            float(self.commission_per_share),
            float(self.slippage_bps),
            float(self.slippage_range_frac),
        )
