"""Rule-based baseline strategies: buy-and-hold, SMA crossover, RSI mean reversion.

Each has a bar-by-bar :meth:`on_bar` (using :class:`stocktrade.quant.features.IncrementalFeatures`)
and a vectorised :meth:`targets` for the backtest fast path; the two give identical floats
(the SMA kernel here sums each window newest-to-oldest exactly like
:func:`stocktrade.quant.features.sma`, which tests check bit for bit).

Targets are *sticky*: after a signal the strategy keeps answering the same target until the
opposite signal, so a risk-throttled order is retried on later bars.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from stocktrade.errors import ValidationError
from stocktrade.jit import njit
from stocktrade.quant.features import FeatureSpec, IncrementalFeatures, rsi
from stocktrade.strategies.base import BarInput, PositionView, Signal

if TYPE_CHECKING:
    from stocktrade.data.arrays import BarArrays

__all__ = ["BuyAndHold", "RsiMeanReversion", "SmaCrossover"]

_NAN = math.nan


def _check_size(size: float) -> float:
    value = float(size)
    if not (math.isfinite(value) and value > 0):
        raise ValidationError(f"size must be a finite fraction of equity > 0, found {size!r}")
    return value


class BuyAndHold:
    """Go long ``size`` of equity on the first bar and keep it.

    Args:
        size: target position as a fraction of equity (1.0 = all-in).
    """

    def __init__(self, size: float = 1.0) -> None:
        self._size = _check_size(size)

    @property
    def name(self) -> str:
        return "buy_and_hold"

    @property
    def warmup(self) -> int:
        return 0

    def params(self) -> dict[str, Any]:
        return {"size": self._size}

    def reset(self) -> None:
        """Stateless: nothing to forget."""

    def on_bar(self, bar: BarInput, position: PositionView) -> Signal:
        return Signal(self._size)

    def targets(self, bars: BarArrays) -> NDArray[np.float64]:
        return np.full(len(bars.close), self._size, dtype=np.float64)


@njit(cache=True)
def _sma_cross_targets(
    close: np.ndarray, fast: int, slow: int, cross: bool, size: float, short_value: float
) -> np.ndarray:
    n = close.shape[0]
    out = np.empty(n)
    prev_f = np.nan
    prev_s = np.nan
    state = np.nan
    for t in range(n):
        if t < slow - 1:
            out[t] = np.nan
            continue
        # One newest-to-oldest pass serves both windows (same order as quant.features.sma).
        acc = 0.0
        fsum = 0.0
        for i in range(slow):
            acc += close[t - i]
            if i == fast - 1:
                fsum = acc
        f = fsum / fast
        s = acc / slow
        if cross:
            if prev_f < prev_s and f > s:
                state = size
            elif prev_f > prev_s and f < s:
                state = short_value
        else:
            state = size if f > s else short_value
        out[t] = state
        prev_f = f
        prev_s = s
    return out


class SmaCrossover:
    """Long while the fast SMA of closes is above the slow one.

    Args:
        fast: fast window (bars), ``>= 1``.
        slow: slow window (bars), ``> fast``.
        mode: ``"state"``: target long whenever ``sma_fast > sma_slow`` else flat (short when
            ``allow_short``), from the first bar both SMAs exist. ``"cross"``: act only on a
            strict crossover (``fast[t-1] < slow[t-1]`` and ``fast[t] > slow[t]`` to go long,
            the mirror to exit), as ``backtesting.lib.crossover`` does, and hold that target
            until the opposite crossover; no opinion before the first crossover.
        allow_short: go short (target ``-size``) instead of flat on the bearish side.
        size: target position magnitude as a fraction of equity.

    Raises:
        ValidationError: windows or size are out of range.
    """

    def __init__(
        self,
        fast: int = 10,
        slow: int = 30,
        *,
        mode: Literal["state", "cross"] = "state",
        allow_short: bool = False,
        size: float = 1.0,
    ) -> None:
        if not (isinstance(fast, int) and isinstance(slow, int) and 1 <= fast < slow):
            raise ValidationError(
                f"need integer windows 1 <= fast < slow, found fast={fast!r}, slow={slow!r}"
            )
        if mode not in ("state", "cross"):
            raise ValidationError(f"mode must be 'state' or 'cross', found {mode!r}")
        self.fast = fast
        self.slow = slow
        self.mode = mode
        self.allow_short = bool(allow_short)
        self._size = _check_size(size)
        self._short_value = -self._size if self.allow_short else 0.0
        self._spec = FeatureSpec(sma_windows=(fast, slow), ema_windows=())
        names = self._spec.names()
        self._col_f = names.index(f"sma_{fast}")
        self._col_s = names.index(f"sma_{slow}")
        self.reset()

    @property
    def name(self) -> str:
        return "sma_crossover"

    @property
    def warmup(self) -> int:
        return self.slow - 1 if self.mode == "state" else self.slow

    def params(self) -> dict[str, Any]:
        return {
            "fast": self.fast,
            "slow": self.slow,
            "mode": self.mode,
            "allow_short": self.allow_short,
            "size": self._size,
        }

    def reset(self) -> None:
        self._features = IncrementalFeatures(self._spec)
        self._prev_f = _NAN
        self._prev_s = _NAN
        self._state = _NAN

    def on_bar(self, bar: BarInput, position: PositionView) -> Signal:
        row = self._features.update(bar.open, bar.high, bar.low, bar.close, bar.volume)
        f = float(row[self._col_f])
        s = float(row[self._col_s])
        if math.isnan(s):
            return Signal()
        if self.mode == "cross":
            if self._prev_f < self._prev_s and f > s:
                self._state = self._size
            elif self._prev_f > self._prev_s and f < s:
                self._state = self._short_value
        else:
            self._state = self._size if f > s else self._short_value
        self._prev_f = f
        self._prev_s = s
        return Signal(self._state)

    def targets(self, bars: BarArrays) -> NDArray[np.float64]:
        close = np.ascontiguousarray(bars.close, dtype=np.float64)
        return _sma_cross_targets(
            close, self.fast, self.slow, self.mode == "cross", self._size, self._short_value
        )


@njit(cache=True)
def _threshold_targets(
    x: np.ndarray, lower: float, upper: float, size: float, short_value: float
) -> np.ndarray:
    out = np.empty(x.shape[0])
    state = np.nan
    for t in range(x.shape[0]):
        v = x[t]
        if v < lower:
            state = size
        elif v > upper:
            state = short_value
        out[t] = state
    return out


class RsiMeanReversion:
    """Buy when Wilder's RSI is oversold, exit (or go short) when it is overbought.

    Target ``+size`` once ``rsi < lower``; ``0`` (``-size`` with ``allow_short``) once
    ``rsi > upper``; unchanged in between; no opinion before the first signal.

    Args:
        window: RSI period (bars).
        lower: oversold threshold in (0, 100).
        upper: overbought threshold in (lower, 100).
        allow_short: go short instead of flat when overbought.
        size: target magnitude as a fraction of equity.

    Raises:
        ValidationError: parameters are out of range.
    """

    def __init__(
        self,
        window: int = 14,
        lower: float = 30.0,
        upper: float = 70.0,
        *,
        allow_short: bool = False,
        size: float = 1.0,
    ) -> None:
        if not (isinstance(window, int) and window >= 1):
            raise ValidationError(f"window must be an integer >= 1, found {window!r}")
        if not (0.0 < float(lower) < float(upper) < 100.0):
            raise ValidationError(
                f"need 0 < lower < upper < 100, found lower={lower}, upper={upper}"
            )
        self.window = window
        self.lower = float(lower)
        self.upper = float(upper)
        self.allow_short = bool(allow_short)
        self._size = _check_size(size)
        self._short_value = -self._size if self.allow_short else 0.0
        self._spec = FeatureSpec(sma_windows=(), ema_windows=(), rsi_window=window)
        self._col = self._spec.names().index(f"rsi_{window}")
        self.reset()

    @property
    def name(self) -> str:
        return "rsi_mean_reversion"

    @property
    def warmup(self) -> int:
        return self.window

    def params(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "lower": self.lower,
            "upper": self.upper,
            "allow_short": self.allow_short,
            "size": self._size,
        }

    def reset(self) -> None:
        self._features = IncrementalFeatures(self._spec)
        self._state = _NAN

    def on_bar(self, bar: BarInput, position: PositionView) -> Signal:
        row = self._features.update(bar.open, bar.high, bar.low, bar.close, bar.volume)
        v = float(row[self._col])
        if v < self.lower:
            self._state = self._size
        elif v > self.upper:
            self._state = self._short_value
        return Signal(self._state)

    def targets(self, bars: BarArrays) -> NDArray[np.float64]:
        values = rsi(np.ascontiguousarray(bars.close, dtype=np.float64), self.window)
        return _threshold_targets(values, self.lower, self.upper, self._size, self._short_value)
