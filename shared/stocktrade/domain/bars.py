"""Bars: the unit of market data everywhere (import, backtest, training, live)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

Symbol = str


class Timeframe(StrEnum):
    """Bar durations stocktrade stores. The value is the canonical short name."""

    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    H1 = "1h"
    D1 = "1d"

    @property
    def duration(self) -> timedelta:
        return _DURATIONS[self]

    @classmethod
    def parse(cls, text: str) -> Timeframe:
        """Parse ``1d``/``1m``/``5m``/``15m``/``1h`` (also ``day``, ``minute``)."""
        aliases = {"day": "1d", "daily": "1d", "minute": "1m", "min": "1m", "hour": "1h"}
        value = aliases.get(text.strip().lower(), text.strip().lower())
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(t.value for t in cls)
            raise ValueError(f"unknown timeframe {text!r}; expected one of {allowed}") from None


_DURATIONS = {
    Timeframe.M1: timedelta(minutes=1),
    Timeframe.M5: timedelta(minutes=5),
    Timeframe.M15: timedelta(minutes=15),
    Timeframe.H1: timedelta(hours=1),
    Timeframe.D1: timedelta(days=1),
}


@dataclass(frozen=True, slots=True)
class Bar:
    """One OHLCV bar. ``ts`` is the bar's open time (daily bars: the trading date at 00:00 UTC)."""

    symbol: Symbol
    timeframe: Timeframe
    ts: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    source: str = ""

    def __post_init__(self) -> None:
        problems = bar_problems(self.open, self.high, self.low, self.close, self.volume)
        if self.ts.tzinfo is None or self.ts.utcoffset() != timedelta(0):
            problems.append(f"timestamp must be UTC-aware, got {self.ts.isoformat()}")
        if not self.symbol or len(self.symbol) > 32:
            problems.append(f"symbol must be 1-32 characters, got {self.symbol!r}")
        if problems:
            raise ValueError("; ".join(problems))


def bar_problems(
    open_: Decimal | float, high: Decimal | float, low: Decimal | float,
    close: Decimal | float, volume: Decimal | float,
) -> list[str]:
    """Return every reason the OHLCV values are not a consistent bar (empty if fine)."""
    problems = []
    if min(open_, high, low, close) <= 0:
        problems.append("prices must be positive")
    if volume < 0:
        problems.append("volume must be >= 0")
    if not (low <= open_ <= high and low <= close <= high):
        problems.append(f"OHLC inconsistent: need low <= open,close <= high "
                        f"(o={open_} h={high} l={low} c={close})")
    return problems


@dataclass(frozen=True, slots=True)
class UpsertCounts:
    """What an import did: rows new to the table, rows whose values changed, rows unchanged."""

    inserted: int
    updated: int
    unchanged: int

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.unchanged


@dataclass(frozen=True, slots=True)
class SymbolSummary:
    """Stored bars of one symbol and timeframe, summarised."""

    symbol: str
    timeframe: str
    first: datetime
    last: datetime
    bars: int
    first_close: float
    last_close: float
    min_low: float
    max_high: float
    mean_volume: float
