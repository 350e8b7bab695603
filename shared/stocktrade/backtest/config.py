"""Backtest configuration: frozen, validated on construction, unknown fields rejected."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from stocktrade.domain.costs import CostModel, FillRule
from stocktrade.domain.risk import RiskLimits
from stocktrade.errors import ValidationError

__all__ = ["BacktestConfig", "parse_utc"]

Mode = Literal["auto", "fast", "step"]
Allocation = Literal["split", "each"]


def parse_utc(value: Any, name: str) -> datetime | None:
    """``None``, an aware datetime, a date, or an ISO 8601 string -> aware UTC datetime.

    Naive datetimes and plain dates are taken as UTC (daily bars are stamped at 00:00 UTC).
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValidationError(
                f"{name} must be an ISO 8601 date or time (e.g. 2014-01-02), found {value!r}"
            ) from exc
    else:
        raise ValidationError(f"{name} must be a date, datetime or ISO string, found {value!r}")
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


@dataclass(frozen=True)
class BacktestConfig:
    """How to run a backtest.

    Attributes:
        initial_cash: starting cash of the whole backtest (> 0).
        cash_allocation: ``"split"`` (default): each symbol is an independent book starting
            with ``initial_cash / n_symbols`` (rounded down to cents, the remainder to the
            first book); ``"each"``: every book starts with ``initial_cash``. Books never share
            cash; the portfolio curve is their sum.
        symbols: symbols to trade (default: every symbol in the data, sorted).
        start, end: inclusive date range (UTC); bars outside are dropped before anything is
            computed, so indicator warm-up happens inside the range.
        costs: commission and slippage.
        risk: risk limits (per book), including ``allow_short``.
        fill_rule: market orders fill at the next bar's open (default) or the same bar's close.
        whole_shares: trade whole units only (default) or fractions.
        close_at_end: flatten every book at the last bar's close (default: keep the position
            open and mark it to market).
        mode: ``"auto"`` picks the compiled fast path when the strategy offers one
            (vectorised targets or batched policy actions) and the bar-by-bar path otherwise;
            ``"fast"`` requires the fast path; ``"step"`` forces bar by bar.
        periods_per_year: for metrics; default from the timeframe (252 trading days; intraday
            bars: 252 sessions of 6.5 hours).
        check_invariants: bar-by-bar path only: verify the ledger identity after every bar.

    Raises:
        ValidationError: any field is invalid (negative fees, start after end, ...).
    """

    initial_cash: Decimal = Decimal("100000")
    cash_allocation: Allocation = "split"
    symbols: tuple[str, ...] | None = None
    start: datetime | None = None
    end: datetime | None = None
    costs: CostModel = field(default_factory=CostModel)
    risk: RiskLimits = field(default_factory=RiskLimits)
    fill_rule: FillRule = FillRule.NEXT_OPEN
    whole_shares: bool = True
    close_at_end: bool = False
    mode: Mode = "auto"
    periods_per_year: float | None = None
    check_invariants: bool = False

    def __post_init__(self) -> None:
        problems: list[str] = []
        try:
            cash = Decimal(str(self.initial_cash))
        except ArithmeticError:
            cash = Decimal("NaN")
        if not cash.is_finite() or cash <= 0:
            problems.append(
                f"initial_cash must be a finite amount > 0, found {self.initial_cash!r}"
            )
        else:
            object.__setattr__(self, "initial_cash", cash)
        if self.cash_allocation not in ("split", "each"):
            problems.append(
                f"cash_allocation must be 'split' or 'each', found {self.cash_allocation!r}"
            )
        if self.symbols is not None:
            if isinstance(self.symbols, str):
                problems.append(
                    f"symbols must be a list of symbols, found the string {self.symbols!r}"
                )
            else:
                syms = tuple(self.symbols)
                if not syms or any(not isinstance(s, str) or not s for s in syms):
                    problems.append(f"symbols must be non-empty strings, found {list(syms)!r}")
                elif len(set(syms)) != len(syms):
                    problems.append(f"symbols must not repeat, found {list(syms)!r}")
                object.__setattr__(self, "symbols", syms)
        start = parse_utc(self.start, "start")
        end = parse_utc(self.end, "end")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        if start is not None and end is not None and start > end:
            problems.append(
                f"start must be on or before end, found start={start.isoformat()} > end={end.isoformat()}"
            )
        if not isinstance(self.costs, CostModel):
            problems.append(f"costs must be a CostModel, found {type(self.costs).__name__}")
        if not isinstance(self.risk, RiskLimits):
            problems.append(f"risk must be RiskLimits, found {type(self.risk).__name__}")
        try:
            object.__setattr__(self, "fill_rule", FillRule(self.fill_rule))
        except ValueError:
            problems.append(
                f"fill_rule must be one of {[r.value for r in FillRule]}, found {self.fill_rule!r}"
            )
        if self.mode not in ("auto", "fast", "step"):
            problems.append(f"mode must be 'auto', 'fast' or 'step', found {self.mode!r}")
        ppy = self.periods_per_year
        if ppy is not None and not (
            isinstance(ppy, (int, float)) and math.isfinite(ppy) and ppy > 0
        ):
            problems.append(f"periods_per_year must be > 0, found {ppy!r}")
        for name in ("whole_shares", "close_at_end", "check_invariants"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, found {getattr(self, name)!r}")
        if problems:
            raise ValidationError("invalid backtest config: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BacktestConfig:
        """Build from a JSON-style dict (``costs`` and ``risk`` as dicts); unknown keys are errors."""
        if not isinstance(data, dict):
            raise ValidationError(f"backtest config must be an object, found {type(data).__name__}")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValidationError(
                f"unknown backtest config fields {sorted(unknown)}; expected a subset of "
                f"{sorted(cls.__dataclass_fields__)}"
            )
        kwargs = dict(data)
        if isinstance(kwargs.get("costs"), dict):
            kwargs["costs"] = CostModel.from_dict(kwargs["costs"])
        if isinstance(kwargs.get("risk"), dict):
            kwargs["risk"] = RiskLimits.from_dict(kwargs["risk"])
        if "initial_cash" in kwargs:
            try:
                kwargs["initial_cash"] = Decimal(str(kwargs["initial_cash"]))
            except ArithmeticError as exc:
                raise ValidationError(
                    f"initial_cash must be a number, found {kwargs['initial_cash']!r}"
                ) from exc
        if kwargs.get("symbols") is not None and isinstance(kwargs["symbols"], list):
            kwargs["symbols"] = tuple(kwargs["symbols"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (stamped into runs; :meth:`from_dict` reads it back)."""
        return {
            "initial_cash": str(self.initial_cash),
            "cash_allocation": self.cash_allocation,
            "symbols": None if self.symbols is None else list(self.symbols),
            "start": None if self.start is None else self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
            "costs": self.costs.to_dict(),
            "risk": self.risk.to_dict(),
            "fill_rule": self.fill_rule.value,
            "whole_shares": self.whole_shares,
            "close_at_end": self.close_at_end,
            "mode": self.mode,
            "periods_per_year": self.periods_per_year,
            "check_invariants": self.check_invariants,
        }
