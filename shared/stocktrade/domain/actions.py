"""Discrete policy actions and how they map to target positions.

A policy picks one of three actions per bar. The mapping to a target position (a fraction of
equity, see :func:`stocktrade.sim.kernels.execute_target`) is:

* ``HOLD``: keep the target in force (no order);
* ``BUY``: target ``+size`` (long);
* ``SELL``: target ``-size`` when shorting is allowed, else ``0`` (flat).

The observation a policy sees includes the *position state*: the sign of the position held
when the decision is made (``-1`` short, ``0`` flat, ``+1`` long). It has only these three
values, which lets a backtest evaluate the policy for all bars in three batched calls.
"""

from __future__ import annotations

import math
from enum import IntEnum

__all__ = [
    "NO_ACTION",
    "N_ACTIONS",
    "POSITION_STATES",
    "Action",
    "action_target_table",
    "position_state",
    "target_for_action",
]


class Action(IntEnum):
    """Discrete action space of every stocktrade policy."""

    HOLD = 0
    BUY = 1
    SELL = 2


N_ACTIONS = len(Action)

#: Marker for "no decision on this bar" (warm-up) in integer action arrays.
NO_ACTION = -1

#: Possible position states, in the column order used by batched action arrays.
POSITION_STATES: tuple[int, int, int] = (-1, 0, 1)


def position_state(qty: float) -> int:
    """Sign of a position: ``-1`` short, ``0`` flat, ``+1`` long."""
    return (qty > 0) - (qty < 0)


def action_target_table(*, allow_short: bool, size: float = 1.0) -> tuple[float, float, float]:
    """Target per action, indexed by :class:`Action`; ``NaN`` means keep the current target."""
    if not size > 0:
        raise ValueError(f"size must be > 0, found {size}")
    return (math.nan, float(size), -float(size) if allow_short else 0.0)


def target_for_action(
    action: int, current_target: float, *, allow_short: bool, size: float = 1.0
) -> float:
    """Target position after ``action`` given the target currently in force."""
    if action == NO_ACTION:
        return current_target
    target = action_target_table(allow_short=allow_short, size=size)[Action(action)]
    return current_target if math.isnan(target) else target
