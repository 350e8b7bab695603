"""Technical features, computed by one per-bar kernel both over history and live.

The same numba step function produces every value: :func:`compute_features` runs it over
whole arrays, :class:`IncrementalFeatures` runs it one bar at a time. Both therefore give
bit-identical floats, and live state can be persisted as JSON between bars
(:meth:`IncrementalFeatures.to_state`) and resumed bit-identically.

Conventions (every value at bar ``t`` uses bars ``0..t`` only, never later ones):

* **Inputs**: float64 arrays in time order. ``close`` must be finite and > 0, ``volume``
  finite and >= 0. ``open``/``high``/``low`` are accepted (and length-checked) so the
  signature stays stable when range-based features are added; no current feature uses them.
* **Warm-up**: a column is NaN until it has enough history; after that it is always finite.
  :attr:`FeatureSpec.warmup` is the first row where every column is defined (the number of
  warm-up bars); :meth:`FeatureSpec.column_warmups` gives it per column.
* **Returns** (``ret``, ``logret``): ``c_t / c_{t-1} - 1`` and ``log(c_t / c_{t-1})``;
  from bar 1.
* **SMA** (``sma_w``): mean of the last ``w`` closes; from bar ``w - 1``.
* **EMA seeding** (``ema_w``): ``y_0 = x_0``, ``y_t = (1 - a) y_{t-1} + a x_t`` with
  ``a = 2 / (w + 1)`` (pandas ``ewm(span=w, adjust=False)``). The recursion starts at bar 0;
  values are reported from bar ``w - 1`` (``min_periods=w``), earlier ones are NaN.
* **MACD** (``macd``, ``macd_signal``, ``macd_hist``): line = EMA(fast) - EMA(slow), both
  seeded at bar 0 as above; signal = EMA(signal) of the line, seeded with the line at bar 0
  (pandas ``line.ewm(span=signal, adjust=False)``); hist = line - signal. The line is
  reported from bar ``slow - 1``, signal and hist from bar ``slow + signal - 2``.
* **RSI** (Wilder, ``rsi_n``): average gain/loss seeded with the simple mean of the first
  ``n`` close changes (bars 1..n), then ``avg = (avg * (n - 1) + x) / n``.
  ``RSI = 100 - 100 / (1 + gain / loss)``; when the average loss is 0 it is 100 (50 when
  the average gain is 0 too). From bar ``n``.
* **Rolling volatility** (``vol_w``): sample standard deviation (ddof=1) of the last ``w``
  simple returns, not annualised; from bar ``w``.
* **Volume z-score** (``volume_z_w``): ``(v_t - mean) / std`` over the last ``w`` volumes
  including ``v_t``, sample std; 0.0 when the window is constant (std == 0); from bar
  ``w - 1``.

Rolling windows are summed afresh from a ring buffer every bar (no running sums), so no
rounding drift builds up over long histories; agreement with pandas is ~1e-12 relative.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, SupportsFloat

import numpy as np

from stocktrade.errors import ValidationError
from stocktrade.jit import njit

__all__ = [
    "FeatureSpec",
    "IncrementalFeatures",
    "compute_features",
    "ema",
    "log_returns",
    "macd",
    "rolling_volatility",
    "rsi",
    "simple_returns",
    "sma",
    "volume_zscore",
]

_SPEC_VERSION = 1
_STATE_VERSION = 1

# Fixed leading columns; SMA then EMA columns follow in the order the spec lists them.
_COL_RET, _COL_LOGRET, _COL_RSI, _COL_MACD, _COL_SIGNAL, _COL_HIST, _COL_VOL, _COL_VOLZ = range(8)
_N_FIXED = 8


# --------------------------------------------------------------------------- spec


def _int_tuple(value: Any, name: str) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValidationError(f"{name} must be a sequence of ints; found {value!r}")
    items = tuple(value)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
            raise ValidationError(f"{name} must hold ints; found {item!r}")
    return tuple(int(i) for i in items)


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValidationError(f"{name} must be an int >= {minimum}; found {value!r}")
    if value < minimum:
        raise ValidationError(f"{name} must be >= {minimum}; found {value}")
    return int(value)


@dataclass(frozen=True)
class FeatureSpec:
    """Which features to compute and with which windows (frozen, JSON round-trippable).

    Attributes:
        sma_windows: SMA windows (bars), one ``sma_w`` column each, in this order.
        ema_windows: EMA spans (bars), one ``ema_w`` column each, in this order.
        rsi_window: Wilder RSI period.
        macd_fast: MACD fast EMA span; must be < ``macd_slow``.
        macd_slow: MACD slow EMA span.
        macd_signal: MACD signal EMA span.
        volatility_window: returns in the rolling volatility window (>= 2).
        volume_window: volumes in the volume z-score window (>= 2).
    """

    sma_windows: tuple[int, ...] = (10, 20, 50)
    ema_windows: tuple[int, ...] = (10, 20, 50)
    rsi_window: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    volatility_window: int = 20
    volume_window: int = 20
    _plan: _Plan = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        sma_w = _int_tuple(self.sma_windows, "sma_windows")
        ema_w = _int_tuple(self.ema_windows, "ema_windows")
        for name, wins in (("sma_windows", sma_w), ("ema_windows", ema_w)):
            if any(w < 1 for w in wins):
                raise ValidationError(f"{name} must all be >= 1; found {wins}")
            if len(set(wins)) != len(wins):
                raise ValidationError(f"{name} must not repeat a window; found {wins}")
        object.__setattr__(self, "sma_windows", sma_w)
        object.__setattr__(self, "ema_windows", ema_w)
        _check_int(self.rsi_window, "rsi_window", 1)
        _check_int(self.macd_fast, "macd_fast", 1)
        _check_int(self.macd_slow, "macd_slow", 2)
        _check_int(self.macd_signal, "macd_signal", 1)
        _check_int(self.volatility_window, "volatility_window", 2)
        _check_int(self.volume_window, "volume_window", 2)
        if self.macd_fast >= self.macd_slow:
            raise ValidationError(
                f"macd_fast must be < macd_slow; found fast={self.macd_fast}, slow={self.macd_slow}"
            )
        object.__setattr__(self, "_plan", _Plan(self))

    def names(self) -> list[str]:
        """Column names of :func:`compute_features` output, in column order."""
        return [
            "ret",
            "logret",
            f"rsi_{self.rsi_window}",
            "macd",
            "macd_signal",
            "macd_hist",
            f"vol_{self.volatility_window}",
            f"volume_z_{self.volume_window}",
            *(f"sma_{w}" for w in self.sma_windows),
            *(f"ema_{w}" for w in self.ema_windows),
        ]

    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        return _N_FIXED + len(self.sma_windows) + len(self.ema_windows)

    def column_warmups(self) -> dict[str, int]:
        """Per column, the first bar index at which the value is defined (not NaN)."""
        slow, sig = self.macd_slow, self.macd_signal
        firsts = [
            1,
            1,
            self.rsi_window,
            slow - 1,
            slow + sig - 2,
            slow + sig - 2,
            self.volatility_window,
            self.volume_window - 1,
            *(w - 1 for w in self.sma_windows),
            *(w - 1 for w in self.ema_windows),
        ]
        return dict(zip(self.names(), firsts, strict=True))

    @property
    def warmup(self) -> int:
        """Number of warm-up bars: rows ``>= warmup`` have every column defined."""
        return max(self.column_warmups().values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (lists and ints) that :meth:`from_dict` reads back."""
        return {
            "version": _SPEC_VERSION,
            "sma_windows": list(self.sma_windows),
            "ema_windows": list(self.ema_windows),
            "rsi_window": self.rsi_window,
            "macd_fast": self.macd_fast,
            "macd_slow": self.macd_slow,
            "macd_signal": self.macd_signal,
            "volatility_window": self.volatility_window,
            "volume_window": self.volume_window,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        """Build a spec from :meth:`to_dict` output; unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise ValidationError(f"FeatureSpec dict expected; found {type(data).__name__}")
        fields = dict(data)
        version = fields.pop("version", _SPEC_VERSION)
        if version != _SPEC_VERSION:
            raise ValidationError(
                f"FeatureSpec version {_SPEC_VERSION} expected; found {version!r}"
            )
        allowed = {
            "sma_windows",
            "ema_windows",
            "rsi_window",
            "macd_fast",
            "macd_slow",
            "macd_signal",
            "volatility_window",
            "volume_window",
        }
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise ValidationError(f"FeatureSpec fields {sorted(allowed)} expected; found {unknown}")
        return cls(**fields)


class _Plan:
    """Packs a spec into the flat int/float arrays and state layout the kernel reads."""

    def __init__(self, spec: FeatureSpec) -> None:
        # SMA windows go to the kernel sorted ascending, each with its output column.
        n_sma = len(spec.sma_windows)
        sma_order = sorted(range(n_sma), key=lambda i: spec.sma_windows[i])
        sma_sorted = [spec.sma_windows[i] for i in sma_order]
        sma_cols = [_N_FIXED + i for i in sma_order]
        ema_cols = [_N_FIXED + n_sma + i for i in range(len(spec.ema_windows))]
        close_len = max(sma_sorted) if n_sma else 1
        layout = _layout(
            len(spec.ema_windows), close_len, spec.volatility_window, spec.volume_window
        )
        self.state_size = layout[-1]
        self.ip = np.array(
            [
                spec.rsi_window,
                spec.macd_slow,
                spec.macd_signal,
                spec.volatility_window,
                spec.volume_window,
                close_len,
                n_sma,
                len(spec.ema_windows),
                *layout[:-1],
                *sma_sorted,
                *sma_cols,
                *spec.ema_windows,
                *ema_cols,
            ],
            dtype=np.int64,
        )
        alphas = [2.0 / (w + 1.0) for w in (spec.macd_fast, spec.macd_slow, spec.macd_signal)]
        alphas += [2.0 / (w + 1.0) for w in spec.ema_windows]
        self.fp = np.array([x for a in alphas for x in (a, 1.0 - a)], dtype=np.float64)

    def new_state(self) -> np.ndarray:
        return np.zeros(self.state_size, dtype=np.float64)


# State layout. Slots 0..: n (bars seen), previous close, RSI gain/loss, MACD fast/slow/
# signal EMAs, then the EMA values, then the close, return and volume ring buffers.
# The state never holds NaN or inf so it stays strict-JSON (and Postgres jsonb) safe.
_S_N, _S_PREV, _S_GAIN, _S_LOSS, _S_FAST, _S_SLOW, _S_SIG = range(7)
_S_EMA0 = 7


def _layout(n_ema: int, close_len: int, vol_w: int, vz_w: int) -> tuple[int, int, int, int]:
    close0 = _S_EMA0 + n_ema
    ret0 = close0 + 2 * close_len  # the close ring is mirrored (see _sma_step)
    vz0 = ret0 + vol_w
    return close0, ret0, vz0, vz0 + vz_w


# ip indices (see _Plan): 0 rsi_n, 1 slow, 2 signal, 3 vol_w, 4 vz_w, 5 close_len,
# 6 n_sma, 7 n_ema, 8 close0, 9 ret0, 10 vz0, then 11.. the SMA/EMA window and column lists.
_IP_HEAD = 11


# --------------------------------------------------------------------------- kernels
# Each sub-step is shared by the full feature kernel and the single-feature helpers, so a
# helper returns exactly the same floats as the matching compute_features column. They are
# inlined at numba-IR level (3x faster loops than calls); no fastmath anywhere, so inlining
# cannot change a single rounding.


@njit(cache=True, nogil=True, inline="always")
def _returns_step(n: int, prev: float, c: float) -> tuple[float, float]:
    if n == 0:
        return np.nan, np.nan
    ratio = c / prev
    return ratio - 1.0, math.log(ratio)


@njit(cache=True, nogil=True, inline="always")
def _rsi_step(st: np.ndarray, off: int, n: int, prev: float, c: float, period: int) -> float:
    if n == 0:
        return np.nan
    d = c - prev
    gain = d if d > 0.0 else 0.0
    loss = -d if d < 0.0 else 0.0
    if n < period:
        st[off] += gain
        st[off + 1] += loss
        return np.nan
    if n == period:
        st[off] = (st[off] + gain) / period
        st[off + 1] = (st[off + 1] + loss) / period
    else:
        st[off] = (st[off] * (period - 1) + gain) / period
        st[off + 1] = (st[off + 1] * (period - 1) + loss) / period
    avg_gain = st[off]
    avg_loss = st[off + 1]
    if avg_loss == 0.0:
        return 100.0 if avg_gain > 0.0 else 50.0
    return 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)


@njit(cache=True, nogil=True, inline="always")
def _ema_step(st: np.ndarray, off: int, n: int, x: float, a: float, b: float) -> float:
    y = x if n == 0 else b * st[off] + a * x
    st[off] = y
    return y


@njit(cache=True, nogil=True, inline="always")
def _ring_mean_std(st: np.ndarray, off: int, w: int) -> tuple[float, float]:
    # One pass over the whole (full) ring, recomputed every bar so nothing drifts. Sums
    # are taken about a value of the window (shifted data), which avoids cancellation and
    # makes a constant window give exactly std == 0.
    shift = st[off]
    a0 = a1 = b0 = b1 = 0.0
    i = off
    end = off + w
    while i + 2 <= end:
        d0 = st[i] - shift
        d1 = st[i + 1] - shift
        a0 += d0
        a1 += d1
        b0 += d0 * d0
        b1 += d1 * d1
        i += 2
    if i < end:
        d0 = st[i] - shift
        a0 += d0
        b0 += d0 * d0
    s1 = a0 + a1
    var = ((b0 + b1) - s1 * s1 / w) / (w - 1)
    return shift + s1 / w, math.sqrt(var) if var > 0.0 else 0.0


@njit(cache=True, nogil=True, inline="always")
def _vol_step(st: np.ndarray, off: int, n: int, ret: float, w: int) -> float:
    if n == 0:
        return np.nan
    st[off + (n - 1) % w] = ret
    if n < w:
        return np.nan
    return _ring_mean_std(st, off, w)[1]


@njit(cache=True, nogil=True, inline="always")
def _volz_step(st: np.ndarray, off: int, n: int, v: float, w: int) -> float:
    st[off + n % w] = v
    if n < w - 1:
        return np.nan
    mean, std = _ring_mean_std(st, off, w)
    if std == 0.0:
        return 0.0
    return (v - mean) / std


@njit(cache=True, nogil=True, inline="always")
def _sma_step(
    st: np.ndarray,
    off: int,
    ring: int,
    n: int,
    x: float,
    wins: np.ndarray,
    cols: np.ndarray,
    out: np.ndarray,
) -> None:
    # The close ring is stored twice (slots off..off+2*ring) so the last `ring` closes are
    # always contiguous. Windows come sorted ascending and one newest-to-oldest pass with a
    # single accumulator serves them all, summed afresh every bar (no running sum to
    # drift). This summation order is part of the contract: strategies.baselines
    # reproduces it to match sma() bit for bit.
    pos = n % ring
    st[off + pos] = x
    st[off + pos + ring] = x
    newest = off + pos + ring
    s = 0.0
    k = 0
    for i in range(wins.shape[0]):
        w = wins[i]
        if w > n + 1:
            out[cols[i]] = np.nan
            continue
        while k < w:
            s += st[newest - k]
            k += 1
        out[cols[i]] = s / w


@njit(cache=True, nogil=True, inline="always")
def _features_step(
    st: np.ndarray, c: float, v: float, out: np.ndarray, ip: np.ndarray, fp: np.ndarray
) -> None:
    n = int(st[_S_N])
    prev = st[_S_PREV]
    rsi_n = int(ip[0])
    slow = int(ip[1])
    sig = int(ip[2])
    vol_w = int(ip[3])
    vz_w = int(ip[4])
    close_len = int(ip[5])
    n_sma = int(ip[6])
    n_ema = int(ip[7])
    close0 = int(ip[8])
    ret0 = int(ip[9])
    vz0 = int(ip[10])

    ret, logret = _returns_step(n, prev, c)
    out[_COL_RET] = ret
    out[_COL_LOGRET] = logret
    out[_COL_RSI] = _rsi_step(st, _S_GAIN, n, prev, c, rsi_n)

    fast_v = _ema_step(st, _S_FAST, n, c, fp[0], fp[1])
    slow_v = _ema_step(st, _S_SLOW, n, c, fp[2], fp[3])
    line = fast_v - slow_v
    signal = _ema_step(st, _S_SIG, n, line, fp[4], fp[5])
    if n >= slow - 1:
        out[_COL_MACD] = line
    else:
        out[_COL_MACD] = np.nan
    if n >= slow + sig - 2:
        out[_COL_SIGNAL] = signal
        out[_COL_HIST] = line - signal
    else:
        out[_COL_SIGNAL] = np.nan
        out[_COL_HIST] = np.nan

    out[_COL_VOL] = _vol_step(st, ret0, n, ret, vol_w)
    out[_COL_VOLZ] = _volz_step(st, vz0, n, v, vz_w)

    base = _IP_HEAD
    if n_sma > 0:
        _sma_step(
            st,
            close0,
            close_len,
            n,
            c,
            ip[base : base + n_sma],
            ip[base + n_sma : base + 2 * n_sma],
            out,
        )
    base += 2 * n_sma
    for i in range(n_ema):
        w = int(ip[base + i])
        col = int(ip[base + n_ema + i])
        y = _ema_step(st, _S_EMA0 + i, n, c, fp[6 + 2 * i], fp[7 + 2 * i])
        out[col] = y if n >= w - 1 else np.nan

    st[_S_N] = n + 1
    st[_S_PREV] = c


@njit(cache=True, nogil=True)
def _features_run(
    close: np.ndarray,
    volume: np.ndarray,
    st: np.ndarray,
    ip: np.ndarray,
    fp: np.ndarray,
    out: np.ndarray,
) -> None:
    for t in range(close.shape[0]):
        _features_step(st, close[t], volume[t], out[t], ip, fp)


@njit(cache=True, nogil=True)
def _returns_run(close: np.ndarray, out: np.ndarray, log: bool) -> None:
    prev = 0.0
    for t in range(close.shape[0]):
        ret, logret = _returns_step(t, prev, close[t])
        out[t] = logret if log else ret
        prev = close[t]


@njit(cache=True, nogil=True)
def _rsi_run(close: np.ndarray, period: int, out: np.ndarray) -> None:
    st = np.zeros(2)
    prev = 0.0
    for t in range(close.shape[0]):
        out[t] = _rsi_step(st, 0, t, prev, close[t], period)
        prev = close[t]


@njit(cache=True, nogil=True)
def _ema_run(x: np.ndarray, window: int, a: float, b: float, out: np.ndarray) -> None:
    st = np.zeros(1)
    for t in range(x.shape[0]):
        y = _ema_step(st, 0, t, x[t], a, b)
        out[t] = y if t >= window - 1 else np.nan


@njit(cache=True, nogil=True)
def _sma_run(x: np.ndarray, window: int, out: np.ndarray) -> None:
    st = np.zeros(2 * window)
    wins = np.array([window], dtype=np.int64)
    cols = np.zeros(1, dtype=np.int64)
    row = np.empty(1)
    for t in range(x.shape[0]):
        _sma_step(st, 0, window, t, x[t], wins, cols, row)
        out[t] = row[0]


@njit(cache=True, nogil=True)
def _vol_run(close: np.ndarray, window: int, out: np.ndarray) -> None:
    st = np.zeros(window)
    prev = 0.0
    for t in range(close.shape[0]):
        ret = _returns_step(t, prev, close[t])[0]
        out[t] = _vol_step(st, 0, t, ret, window)
        prev = close[t]


@njit(cache=True, nogil=True)
def _volz_run(volume: np.ndarray, window: int, out: np.ndarray) -> None:
    st = np.zeros(window)
    for t in range(volume.shape[0]):
        out[t] = _volz_step(st, 0, t, volume[t], window)


@njit(cache=True, nogil=True)
def _macd_run(close: np.ndarray, slow: int, sig: int, fp: np.ndarray, out: np.ndarray) -> None:
    st = np.zeros(3)
    for t in range(close.shape[0]):
        c = close[t]
        line = _ema_step(st, 0, t, c, fp[0], fp[1]) - _ema_step(st, 1, t, c, fp[2], fp[3])
        signal = _ema_step(st, 2, t, line, fp[4], fp[5])
        out[0, t] = line if t >= slow - 1 else np.nan
        if t >= slow + sig - 2:
            out[1, t] = signal
            out[2, t] = line - signal
        else:
            out[1, t] = np.nan
            out[2, t] = np.nan


# --------------------------------------------------------------------------- validation


def _as_series(values: Any, name: str) -> np.ndarray:
    try:
        arr = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValidationError(f"{name} must be numeric; could not convert: {e}") from e
    if arr.ndim != 1:
        raise ValidationError(f"{name} must be 1-D; found shape {arr.shape}")
    return arr


def _check_close(close: np.ndarray, name: str = "close") -> None:
    ok = np.isfinite(close) & (close > 0.0)
    if not ok.all():
        i = int(np.argmin(ok))
        raise ValidationError(f"{name} must be finite and > 0; found {close[i]!r} at index {i}")


def _check_volume(volume: np.ndarray) -> None:
    ok = np.isfinite(volume) & (volume >= 0.0)
    if not ok.all():
        i = int(np.argmin(ok))
        raise ValidationError(f"volume must be finite and >= 0; found {volume[i]!r} at index {i}")


def _check_finite(x: np.ndarray, name: str) -> None:
    ok = np.isfinite(x)
    if not ok.all():
        i = int(np.argmin(ok))
        raise ValidationError(f"{name} must be finite; found {x[i]!r} at index {i}")


def _check_window(window: Any, name: str, minimum: int) -> int:
    return _check_int(window, name, minimum)


# --------------------------------------------------------------------------- public API


def compute_features(
    open: Any,
    high: Any,
    low: Any,
    close: Any,
    volume: Any,
    spec: FeatureSpec | None = None,
) -> np.ndarray:
    """Compute every feature of ``spec`` over a whole history.

    Args:
        open: Bar opens (length T; length-checked only).
        high: Bar highs (length T; length-checked only).
        low: Bar lows (length T; length-checked only).
        close: Bar closes, finite and > 0.
        volume: Bar volumes, finite and >= 0.
        spec: Feature configuration; ``FeatureSpec()`` when omitted.

    Returns:
        float64 array of shape ``(T, spec.n_features)``, columns as ``spec.names()``; rows
        before each column's warm-up are NaN. Row ``t`` equals what
        ``IncrementalFeatures(spec).update`` returns for bar ``t``, bit for bit.

    Raises:
        ValidationError: Arrays are not 1-D, differ in length, or hold invalid values.
    """
    spec = spec if spec is not None else FeatureSpec()
    c = _as_series(close, "close")
    v = _as_series(volume, "volume")
    for name, arr in (("open", open), ("high", high), ("low", low), ("volume", v)):
        length = len(arr) if arr is not None else -1
        if length != c.shape[0]:
            raise ValidationError(
                f"{name} must have the same length as close ({c.shape[0]}); found {length}"
            )
    _check_close(c)
    _check_volume(v)
    plan = spec._plan
    out = np.empty((c.shape[0], spec.n_features), dtype=np.float64)
    _features_run(c, v, plan.new_state(), plan.ip, plan.fp, out)
    return out


class IncrementalFeatures:
    """Feature state advanced one bar at a time (live path), identical to the batch path.

    Example:
        >>> inc = IncrementalFeatures(FeatureSpec())
        >>> row = inc.update(o, h, l, c, v)          # float64[n_features]
        >>> saved = json.dumps(inc.to_state())        # persist between bars
        >>> inc = IncrementalFeatures.from_state(json.loads(saved))
    """

    __slots__ = ("_fp", "_ip", "_spec", "_state")

    def __init__(self, spec: FeatureSpec | None = None) -> None:
        """Start with no history.

        Args:
            spec: Feature configuration; ``FeatureSpec()`` when omitted.
        """
        self._spec = spec if spec is not None else FeatureSpec()
        plan = self._spec._plan
        self._ip = plan.ip
        self._fp = plan.fp
        self._state = plan.new_state()

    @property
    def spec(self) -> FeatureSpec:
        """The feature configuration."""
        return self._spec

    @property
    def bars_seen(self) -> int:
        """Number of bars passed to :meth:`update` so far."""
        return int(self._state[_S_N])

    @property
    def is_warm(self) -> bool:
        """True once the last returned row has every column defined."""
        return self.bars_seen > self._spec.warmup

    def update(
        self,
        open: SupportsFloat,
        high: SupportsFloat,
        low: SupportsFloat,
        close: SupportsFloat,
        volume: SupportsFloat,
    ) -> np.ndarray:
        """Advance by one bar and return its feature row.

        Args:
            open: Bar open (unused by the current features). Prices and volumes may be
                floats or Decimals (live ``Bar`` fields); they are converted to float64.
            high: Bar high (unused by the current features).
            low: Bar low (unused by the current features).
            close: Bar close, finite and > 0.
            volume: Bar volume, finite and >= 0.

        Returns:
            A new float64 array of shape ``(n_features,)``, equal bit for bit to row
            ``bars_seen - 1`` of :func:`compute_features` over the same bars.

        Raises:
            ValidationError: close or volume is invalid; the state is left unchanged.
        """
        c = float(close)
        v = float(volume)
        if not (math.isfinite(c) and c > 0.0):
            raise ValidationError(f"close must be finite and > 0; found {close!r}")
        if not (math.isfinite(v) and v >= 0.0):
            raise ValidationError(f"volume must be finite and >= 0; found {volume!r}")
        out = np.empty(self._spec.n_features, dtype=np.float64)
        _features_step(self._state, c, v, out, self._ip, self._fp)
        return out

    def to_state(self) -> dict[str, Any]:
        """JSON-safe snapshot (ints, finite floats, lists) that resumes bit-identically."""
        return {
            "version": _STATE_VERSION,
            "spec": self._spec.to_dict(),
            "state": [float(x) for x in self._state],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> IncrementalFeatures:
        """Rebuild from :meth:`to_state` output (e.g. after ``json.loads``).

        Raises:
            ValidationError: The snapshot has another version, spec or length.
        """
        if not isinstance(state, Mapping):
            raise ValidationError(f"state dict expected; found {type(state).__name__}")
        if state.get("version") != _STATE_VERSION:
            raise ValidationError(
                f"state version {_STATE_VERSION} expected; found {state.get('version')!r}"
            )
        spec = FeatureSpec.from_dict(state.get("spec", {}))
        inc = cls(spec)
        values = state.get("state")
        if not isinstance(values, list) or len(values) != inc._state.shape[0]:
            found = len(values) if isinstance(values, list) else type(values).__name__
            raise ValidationError(
                f"state list of {inc._state.shape[0]} floats expected; found {found}"
            )
        arr = np.array(values, dtype=np.float64)
        if not np.isfinite(arr).all() or arr[_S_N] < 0 or arr[_S_N] != math.floor(arr[_S_N]):
            raise ValidationError("state must hold finite floats and a whole bar count")
        inc._state = arr
        return inc


def simple_returns(close: Any) -> np.ndarray:
    """``close[t] / close[t-1] - 1``; NaN at t=0. Same floats as the ``ret`` column."""
    c = _as_series(close, "close")
    _check_close(c)
    out = np.empty_like(c)
    _returns_run(c, out, False)
    return out


def log_returns(close: Any) -> np.ndarray:
    """``log(close[t] / close[t-1])``; NaN at t=0. Same floats as the ``logret`` column."""
    c = _as_series(close, "close")
    _check_close(c)
    out = np.empty_like(c)
    _returns_run(c, out, True)
    return out


def sma(x: Any, window: int) -> np.ndarray:
    """Simple moving average of the last ``window`` values; NaN for t < window - 1."""
    w = _check_window(window, "window", 1)
    arr = _as_series(x, "x")
    _check_finite(arr, "x")
    out = np.empty_like(arr)
    _sma_run(arr, w, out)
    return out


def ema(x: Any, window: int) -> np.ndarray:
    """EMA with span ``window`` seeded with ``x[0]``; NaN for t < window - 1.

    Matches pandas ``Series(x).ewm(span=window, adjust=False, min_periods=window).mean()``.
    """
    w = _check_window(window, "window", 1)
    arr = _as_series(x, "x")
    _check_finite(arr, "x")
    a = 2.0 / (w + 1.0)
    out = np.empty_like(arr)
    _ema_run(arr, w, a, 1.0 - a, out)
    return out


def rsi(close: Any, window: int = 14) -> np.ndarray:
    """Wilder RSI in [0, 100]; NaN for t < window (see the module conventions)."""
    w = _check_window(window, "window", 1)
    c = _as_series(close, "close")
    _check_close(c)
    out = np.empty_like(c)
    _rsi_run(c, w, out)
    return out


def macd(
    close: Any, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MACD ``(line, signal, histogram)`` as in the module conventions."""
    spec = FeatureSpec(
        sma_windows=(), ema_windows=(), macd_fast=fast, macd_slow=slow, macd_signal=signal
    )
    c = _as_series(close, "close")
    _check_close(c)
    out = np.empty((3, c.shape[0]), dtype=np.float64)
    _macd_run(c, spec.macd_slow, spec.macd_signal, spec._plan.fp, out)
    return out[0], out[1], out[2]


def rolling_volatility(close: Any, window: int = 20) -> np.ndarray:
    """Sample std (ddof=1) of the last ``window`` simple returns of ``close``.

    Not annualised; NaN for t < window. Same floats as the ``vol_w`` column.
    """
    w = _check_window(window, "window", 2)
    c = _as_series(close, "close")
    _check_close(c)
    out = np.empty_like(c)
    _vol_run(c, w, out)
    return out


def volume_zscore(volume: Any, window: int = 20) -> np.ndarray:
    """``(v - mean) / std`` over the last ``window`` volumes (ddof=1); 0.0 if std == 0."""
    w = _check_window(window, "window", 2)
    v = _as_series(volume, "volume")
    _check_volume(v)
    out = np.empty_like(v)
    _volz_run(v, w, out)
    return out
