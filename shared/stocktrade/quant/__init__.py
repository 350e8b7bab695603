"""Quantitative building blocks: features, policy observations, performance metrics.

Importing this package is cheap: numpy and numba are only imported when a submodule
(:mod:`.features`, :mod:`.observation`, :mod:`.metrics`) or one of the names below is
first used, e.g. ``from stocktrade.quant import compute_features``.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "FeatureSpec": "features",
    "IncrementalFeatures": "features",
    "compute_features": "features",
    "ObservationSpec": "observation",
    "normalise": "observation",
    "observation_at": "observation",
    "observations_batch": "observation",
    "compute_metrics": "metrics",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
