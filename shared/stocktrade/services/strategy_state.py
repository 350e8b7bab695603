"""Persist a strategy's bar-by-bar state as JSON, so a stateless function can resume it.

The live chain runs one bar per event, possibly on another instance than the previous bar,
so each book stores its strategy's state between bars (``chain_books.strategy_state``).
:func:`snapshot` and :func:`restore` give that state for every strategy the platform ships:

* a strategy with its own ``to_state()`` / ``from_state(state)`` methods uses them (the
  preferred form: the strategy owns its state);
* otherwise the state of the known classes is read field by field: the
  :class:`~stocktrade.quant.features.IncrementalFeatures` they carry (its own exact JSON
  state) plus the few floats and arrays they keep between bars.

Floats go through JSON as their shortest repr, so they come back bit for bit; NaN (a
strategy with no opinion yet) is written as ``null``. A snapshot taken after bar ``t`` and
restored into a fresh instance continues exactly like the uninterrupted instance
(``tests/unit/test_chain_paper_book.py`` checks it for every strategy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from stocktrade.errors import ValidationError
from stocktrade.quant.features import IncrementalFeatures
from stocktrade.strategies.baselines import BuyAndHold, RsiMeanReversion, SmaCrossover

__all__ = ["STATE_VERSION", "restore", "snapshot"]

STATE_VERSION = 1


def _f(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _unf(x: Any) -> float:
    return math.nan if x is None else float(x)


def _policy_class() -> type | None:
    # Only import the policy module when it is already loaded (it is light, but keeps the
    # rule-based path free of it).
    import sys

    module = sys.modules.get("stocktrade.strategies.onnx_policy")
    return getattr(module, "OnnxPolicyStrategy", None) if module is not None else None


def snapshot(strategy: Any) -> dict[str, Any]:
    """JSON-safe state of ``strategy`` after the bars it has seen.

    Raises:
        ValidationError: the strategy's state cannot be persisted (an unknown class without
            ``to_state``).
    """
    own = getattr(strategy, "to_state", None)
    if callable(own):
        return {"v": STATE_VERSION, "kind": "own", "state": own()}
    if isinstance(strategy, BuyAndHold):
        return {"v": STATE_VERSION, "kind": "buy_and_hold"}
    if isinstance(strategy, SmaCrossover):
        return {
            "v": STATE_VERSION,
            "kind": "sma_crossover",
            "features": strategy._features.to_state(),
            "prev_f": _f(strategy._prev_f),
            "prev_s": _f(strategy._prev_s),
            "state": _f(strategy._state),
        }
    if isinstance(strategy, RsiMeanReversion):
        return {
            "v": STATE_VERSION,
            "kind": "rsi_mean_reversion",
            "features": strategy._features.to_state(),
            "state": _f(strategy._state),
        }
    policy = _policy_class()
    if policy is not None and isinstance(strategy, policy):
        window = strategy._window  # type: ignore[attr-defined]
        return {
            "v": STATE_VERSION,
            "kind": "onnx_policy",
            "features": strategy._features.to_state(),  # type: ignore[attr-defined]
            "window": [[float(x) for x in row] for row in window.tolist()],
            "t": int(strategy._t),  # type: ignore[attr-defined]
        }
    raise ValidationError(
        f"cannot persist the state of strategy {type(strategy).__name__}: expected one of the "
        "shipped strategies or a strategy with to_state()/from_state()"
    )


def restore(strategy: Any, state: Mapping[str, Any] | None) -> None:
    """Put ``strategy`` back into the state :func:`snapshot` recorded (``None``: reset it).

    Raises:
        ValidationError: the state is of another version or strategy kind, or does not fit
            (e.g. a feature spec or window size that differs from the strategy's).
    """
    if state is None:
        strategy.reset()
        return
    if state.get("v") != STATE_VERSION:
        raise ValidationError(
            f"strategy state version {STATE_VERSION} expected, found {state.get('v')!r}"
        )
    kind = state.get("kind")
    if kind == "own":
        loader = getattr(strategy, "from_state", None)
        if not callable(loader):
            raise ValidationError(
                f"state was written by to_state() but {type(strategy).__name__} has no from_state()"
            )
        loader(state["state"])
        return
    expected = _kind_of(strategy)
    if kind != expected:
        raise ValidationError(f"strategy state of kind {expected!r} expected, found {kind!r}")
    if kind == "buy_and_hold":
        return
    features = IncrementalFeatures.from_state(state["features"])
    if features.spec != strategy._features.spec:
        raise ValidationError(
            f"stored feature spec {features.spec.to_dict()} differs from the strategy's "
            f"{strategy._features.spec.to_dict()}"
        )
    if kind == "sma_crossover":
        strategy._features = features
        strategy._prev_f = _unf(state["prev_f"])
        strategy._prev_s = _unf(state["prev_s"])
        strategy._state = _unf(state["state"])
    elif kind == "rsi_mean_reversion":
        strategy._features = features
        strategy._state = _unf(state["state"])
    else:  # onnx_policy
        window = np.asarray(state["window"], dtype=np.float32)
        if window.shape != strategy._window.shape:
            raise ValidationError(
                f"stored observation window of shape {strategy._window.shape} expected, found "
                f"{window.shape}"
            )
        strategy._features = features
        strategy._window = window
        strategy._t = int(state["t"])


def _kind_of(strategy: Any) -> str:
    if isinstance(strategy, BuyAndHold):
        return "buy_and_hold"
    if isinstance(strategy, SmaCrossover):
        return "sma_crossover"
    if isinstance(strategy, RsiMeanReversion):
        return "rsi_mean_reversion"
    policy = _policy_class()
    if policy is not None and isinstance(strategy, policy):
        return "onnx_policy"
    return type(strategy).__name__
