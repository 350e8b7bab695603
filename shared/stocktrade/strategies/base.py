"""The strategy interface: a bar (and the strategy's own state) in, a target position out.

A strategy sees one bar at a time (:meth:`Strategy.on_bar`) plus a view of the book's
position, and answers with a :class:`Signal`: the *target position* as a fraction of equity
(1.0 = all-in long, 0.0 = flat, -1.0 = all-in short) or NaN for "no opinion, keep what is in
force". Risk checks, sizing and execution happen downstream
(:mod:`stocktrade.services.trading`), identically in backtest and live.

Two optional capabilities let the backtest engine skip the per-bar Python loop:

* :class:`VectorisedStrategy` — :meth:`~VectorisedStrategy.targets` returns every bar's
  target at once. Only for strategies whose targets do not depend on the position.
* :class:`BatchPolicyStrategy` — a policy whose decision depends on the position only through
  its sign (-1/0/+1): :meth:`~BatchPolicyStrategy.batch_actions` evaluates it for every bar
  under each of the three position states; the engine's compiled loop then picks the action
  for the state actually held.

Both must reproduce :meth:`Strategy.on_bar` exactly; tests check it for every strategy here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from stocktrade.domain.actions import NO_ACTION, position_state

if TYPE_CHECKING:
    from stocktrade.data.arrays import BarArrays

__all__ = [
    "BarInput",
    "BatchPolicyStrategy",
    "PositionView",
    "Signal",
    "Strategy",
    "VectorisedStrategy",
    "has_batch_actions",
    "has_targets",
]


@dataclass(frozen=True, slots=True)
class BarInput:
    """One bar as plain floats (the float view the strategies and kernels work on).

    Attributes:
        index: position of the bar in the stream the strategy sees (0, 1, 2, ...).
        ts: bar time, aware UTC.
        open, high, low, close, volume: OHLCV.
    """

    index: int
    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class PositionView:
    """What a strategy may know about its book when it decides.

    Attributes:
        qty: signed position (units) after this bar's fills.
        target: target position (fraction of equity) currently in force.
    """

    qty: float = 0.0
    target: float = 0.0

    @property
    def state(self) -> int:
        """Sign of the position: -1 short, 0 flat, +1 long."""
        return position_state(self.qty)


@dataclass(frozen=True, slots=True)
class Signal:
    """A strategy's answer for one bar.

    Attributes:
        target: target position as a fraction of equity; NaN = keep the target in force.
        action: the discrete policy action behind it (``-1`` for rule-based strategies).
        probs: action probabilities of a policy, if any (decision log / confidence).
    """

    target: float = math.nan
    action: int = NO_ACTION
    probs: tuple[float, ...] | None = None

    @property
    def has_opinion(self) -> bool:
        """False when the strategy has nothing to say this bar."""
        return not math.isnan(self.target)

    @property
    def confidence(self) -> float:
        """Probability of the chosen action (NaN without probabilities)."""
        if self.probs is None or self.action < 0 or self.action >= len(self.probs):
            return math.nan
        return float(self.probs[self.action])


@runtime_checkable
class Strategy(Protocol):
    """A trading strategy: stateful, one bar at a time."""

    @property
    def name(self) -> str:
        """Short identifier (goes into runs and reports)."""
        ...

    @property
    def warmup(self) -> int:
        """Bars the strategy needs before its first opinion."""
        ...

    def params(self) -> dict[str, Any]:
        """JSON-safe parameters (stamped into every run)."""
        ...

    def reset(self) -> None:
        """Forget all state: the next :meth:`on_bar` call is bar 0 of a new stream."""
        ...

    def on_bar(self, bar: BarInput, position: PositionView) -> Signal:
        """Decide on ``bar`` (known up to its close) given the book's ``position``."""
        ...


@runtime_checkable
class VectorisedStrategy(Strategy, Protocol):
    """A strategy whose targets depend on prices only, computable for all bars at once."""

    def targets(self, bars: BarArrays) -> NDArray[np.float64]:
        """``float64[T]``: element ``t`` equals ``on_bar(bar_t, ...).target`` after a reset."""
        ...


@runtime_checkable
class BatchPolicyStrategy(Strategy, Protocol):
    """A discrete-action policy that sees the position only through its sign."""

    @property
    def action_table(self) -> tuple[float, float, float]:
        """Target per action (NaN = hold), see :func:`stocktrade.domain.actions.action_target_table`."""
        ...

    def batch_actions(self, bars: BarArrays) -> NDArray[np.int64]:
        """``int64[T, 3]``: the action at bar ``t`` when the position state is
        ``POSITION_STATES[j]`` (-1, 0, +1); ``NO_ACTION`` where the policy does not decide."""
        ...


def has_targets(strategy: object) -> bool:
    """True if ``strategy`` offers the vectorised fast path."""
    return callable(getattr(strategy, "targets", None))


def has_batch_actions(strategy: object) -> bool:
    """True if ``strategy`` offers the batched-policy fast path."""
    return callable(getattr(strategy, "batch_actions", None)) and hasattr(strategy, "action_table")
