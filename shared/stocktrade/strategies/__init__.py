"""Strategies: rule-based baselines and ONNX policies behind one small interface.

``OnnxPolicyStrategy`` is imported lazily (it is the only one that may load onnxruntime, and
only when given a path).
"""

from __future__ import annotations

from typing import Any

from stocktrade.strategies.base import (
    BarInput,
    BatchPolicyStrategy,
    PositionView,
    Signal,
    Strategy,
    VectorisedStrategy,
)
from stocktrade.strategies.baselines import BuyAndHold, RsiMeanReversion, SmaCrossover

__all__ = [
    "BarInput",
    "BatchPolicyStrategy",
    "BuyAndHold",
    "OnnxPolicyStrategy",
    "PositionView",
    "RsiMeanReversion",
    "Signal",
    "SmaCrossover",
    "Strategy",
    "VectorisedStrategy",
]


def __getattr__(name: str) -> Any:
    if name == "OnnxPolicyStrategy":
        from stocktrade.strategies.onnx_policy import OnnxPolicyStrategy

        return OnnxPolicyStrategy
    raise AttributeError(f"module 'stocktrade.strategies' has no attribute {name!r}")
