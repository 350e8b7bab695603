"""Policy observations: one code path for training, backtest and live.

An observation at bar ``t`` is, flattened into one float32 vector::

    [ norm[t - window + 1], ..., norm[t] ]   window rows x F' features, oldest first
    [ position ]                              only when ``include_position``
    [ sentiment ]                             always present; 0.0 until news fills it

``norm`` is the output of :func:`normalise`: the selected feature columns, z-scored with
mean/std fitted on a training range only (:meth:`ObservationSpec.fit`), clipped to
``[-clip, clip]``, with NaN replaced by 0.0. NaN only occurs in the feature warm-up
(:attr:`stocktrade.quant.features.FeatureSpec.warmup`), so rows before the warm-up read
as "average" (0.0) and should not be used for decisions; rows before 0 are zero-padded.

:func:`normalise` returns a :class:`NormalisedFeatures` array, an ``ndarray`` subclass
(shape ``(T, F')``, float32, read-only) that also remembers the window and whether a
position slot is present, and keeps a zero-padded copy so :func:`observation_at` is one
slice copy (about 0.6 us) instead of building padding on every step.

Live, keep the last ``window`` feature rows from
:class:`stocktrade.quant.features.IncrementalFeatures` and call
``observation_at(normalise(rows, spec), len(rows) - 1, position, sentiment)``: the same
functions, so the same floats as in training and backtest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from stocktrade.errors import ValidationError

__all__ = [
    "DEFAULT_FEATURE_NAMES",
    "NormalisedFeatures",
    "ObservationSpec",
    "normalise",
    "observation_at",
    "observations_batch",
]

_SPEC_VERSION = 1

#: Close return, RSI, MACD histogram, volume z-score and rolling volatility, named as
#: :meth:`stocktrade.quant.features.FeatureSpec.names` names them with default windows.
DEFAULT_FEATURE_NAMES: tuple[str, ...] = ("ret", "rsi_14", "macd_hist", "volume_z_20", "vol_20")


def _finite_tuple(values: Any, name: str, n: int) -> tuple[float, ...]:
    try:
        out = tuple(float(x) for x in values)
    except (TypeError, ValueError) as e:
        raise ValidationError(f"{name} must be a sequence of {n} floats: {e}") from e
    if len(out) != n:
        raise ValidationError(f"{name} must have {n} values (one per feature); found {len(out)}")
    if not all(math.isfinite(x) for x in out):
        raise ValidationError(f"{name} must be finite; found {out}")
    return out


@dataclass(frozen=True)
class ObservationSpec:
    """How feature rows become policy observations (frozen, JSON round-trippable).

    Attributes:
        feature_names: Feature columns used, in observation order.
        window: Rows per observation (>= 1).
        clip: Normalised values are clipped to ``[-clip, clip]`` (> 0).
        include_position: Append the position (in {-1, 0, 1} or a fraction) after the window.
        mean: Per-feature mean fitted on the training range; None until :meth:`fit`.
        std: Per-feature std (ddof=0; 1.0 where the training std is 0 or undefined).
        source_names: Column names of the feature matrix :func:`normalise` expects; None
            means the matrix already holds exactly ``feature_names``, in order.
    """

    feature_names: tuple[str, ...] = DEFAULT_FEATURE_NAMES
    window: int = 10
    clip: float = 5.0
    include_position: bool = True
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    source_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.feature_names, str):
            raise ValidationError(
                f"feature_names must be a sequence of names; found {self.feature_names!r}"
            )
        names = tuple(str(n) for n in self.feature_names)
        if not names or len(set(names)) != len(names):
            raise ValidationError(f"feature_names must be non-empty and unique; found {names}")
        object.__setattr__(self, "feature_names", names)
        if (
            isinstance(self.window, bool)
            or not isinstance(self.window, (int, np.integer))
            or self.window < 1
        ):
            raise ValidationError(f"window must be an int >= 1; found {self.window!r}")
        object.__setattr__(self, "window", int(self.window))
        clip = float(self.clip)
        if not (math.isfinite(clip) and clip > 0):
            raise ValidationError(f"clip must be finite and > 0; found {self.clip!r}")
        object.__setattr__(self, "clip", clip)
        object.__setattr__(self, "include_position", bool(self.include_position))
        if (self.mean is None) != (self.std is None):
            raise ValidationError("mean and std must both be set or both be None")
        if self.mean is not None and self.std is not None:
            object.__setattr__(self, "mean", _finite_tuple(self.mean, "mean", len(names)))
            std = _finite_tuple(self.std, "std", len(names))
            if any(s <= 0 for s in std):
                raise ValidationError(f"std must be > 0; found {std}")
            object.__setattr__(self, "std", std)
        if self.source_names is not None:
            if isinstance(self.source_names, str):
                raise ValidationError(
                    f"source_names must be a sequence; found {self.source_names!r}"
                )
            src = tuple(str(n) for n in self.source_names)
            missing = [n for n in names if n not in src]
            if missing:
                raise ValidationError(f"feature_names {missing} not found in source_names {src}")
            object.__setattr__(self, "source_names", src)

    @property
    def n_features(self) -> int:
        """Features per row (F')."""
        return len(self.feature_names)

    @property
    def obs_dim(self) -> int:
        """Length of one observation: window * F' + position slot + sentiment slot."""
        return self.window * self.n_features + (1 if self.include_position else 0) + 1

    @property
    def is_fitted(self) -> bool:
        """True once mean and std are set."""
        return self.mean is not None

    def fit(self, features: Any, names: Sequence[str], start: int, end: int) -> ObservationSpec:
        """Return a copy with mean/std fitted on rows ``start:end`` (training range only).

        NaN rows (feature warm-up) are ignored. A feature whose training std is 0, or
        that has no finite value in the range, gets std 1.0 (and mean 0.0 if undefined).

        Args:
            features: float array ``(T, F)`` from ``compute_features``.
            names: The F column names of ``features`` (``FeatureSpec.names()``).
            start: First training row (inclusive).
            end: Last training row (exclusive); only these rows are looked at.

        Raises:
            ValidationError: Shapes or names do not match, or the range is empty.
        """
        arr = np.asarray(features, dtype=np.float64)
        names_t = tuple(str(n) for n in names)
        if arr.ndim != 2 or arr.shape[1] != len(names_t):
            raise ValidationError(
                f"features of shape (T, {len(names_t)}) expected (one column per name); "
                f"found {arr.shape}"
            )
        if not (0 <= start < end <= arr.shape[0]):
            raise ValidationError(
                f"0 <= start < end <= {arr.shape[0]} expected; found start={start}, end={end}"
            )
        idx = _column_index(names_t, self.feature_names)
        block = arr[start:end][:, idx]
        finite = np.isfinite(block)
        count = finite.sum(axis=0)
        safe = np.where(finite, block, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = safe.sum(axis=0) / count
            var = (np.where(finite, block - mean, 0.0) ** 2).sum(axis=0) / count
        mean = np.where(count > 0, mean, 0.0)
        std = np.sqrt(np.where(count > 0, var, 1.0))
        std = np.where(std > 0, std, 1.0)
        return ObservationSpec(
            feature_names=self.feature_names,
            window=self.window,
            clip=self.clip,
            include_position=self.include_position,
            mean=tuple(float(x) for x in mean),
            std=tuple(float(x) for x in std),
            source_names=names_t,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (goes into model manifests); :meth:`from_dict` reads it back."""
        return {
            "version": _SPEC_VERSION,
            "feature_names": list(self.feature_names),
            "window": self.window,
            "clip": self.clip,
            "include_position": self.include_position,
            "sentiment_slot": True,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "source_names": None if self.source_names is None else list(self.source_names),
            "obs_dim": self.obs_dim,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObservationSpec:
        """Build a spec from :meth:`to_dict` output; unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise ValidationError(f"ObservationSpec dict expected; found {type(data).__name__}")
        fields = dict(data)
        version = fields.pop("version", _SPEC_VERSION)
        if version != _SPEC_VERSION:
            raise ValidationError(
                f"ObservationSpec version {_SPEC_VERSION} expected; found {version!r}"
            )
        fields.pop("sentiment_slot", None)
        obs_dim = fields.pop("obs_dim", None)
        allowed = {
            "feature_names",
            "window",
            "clip",
            "include_position",
            "mean",
            "std",
            "source_names",
        }
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise ValidationError(
                f"ObservationSpec fields {sorted(allowed)} expected; found {unknown}"
            )
        spec = cls(**fields)
        if obs_dim is not None and obs_dim != spec.obs_dim:
            raise ValidationError(f"obs_dim {spec.obs_dim} implied by the fields; found {obs_dim}")
        return spec


def _column_index(source: Sequence[str], wanted: Sequence[str]) -> list[int]:
    pos = {n: i for i, n in enumerate(source)}
    missing = [n for n in wanted if n not in pos]
    if missing:
        raise ValidationError(f"feature columns {missing} expected; found columns {list(source)}")
    return [pos[n] for n in wanted]


class _Buffer:
    """Zero-padded, flattened copy of normalised rows, laid out for one-slice observations.

    ``flat`` holds ``window - 1`` zero rows, the T rows, then two spare zeros, so the
    observation at ``t`` (window rows plus the position/sentiment slots) is the single
    contiguous slice ``flat[t * n_cols : t * n_cols + obs_dim]``; the slots are then
    overwritten. ``padded`` is the ``(window - 1 + T, n_cols)`` view used by the batch path.
    """

    __slots__ = ("flat", "include_position", "k", "n_cols", "n_rows", "obs_dim", "padded", "window")

    def __init__(self, rows: np.ndarray, window: int, include_position: bool) -> None:
        n_rows, n_cols = rows.shape
        size = (window - 1 + n_rows) * n_cols
        flat = np.zeros(size + 2, dtype=np.float32)
        flat[(window - 1) * n_cols : size] = rows.reshape(-1)
        flat.flags.writeable = False
        self.flat = flat
        self.padded = flat[:size].reshape(window - 1 + n_rows, n_cols)
        self.window = window
        self.include_position = include_position
        self.n_rows = n_rows
        self.n_cols = n_cols
        self.k = window * n_cols
        self.obs_dim = self.k + (2 if include_position else 1)


class NormalisedFeatures(np.ndarray):
    """float32 ``(T, F')`` normalised features that remember how to build observations.

    Behaves as a read-only ndarray. ``window`` and ``include_position`` come from the
    :class:`ObservationSpec`. Arrays made from it (slices, arithmetic, unpickling) keep
    those two attributes and build their own padded buffer on first use.
    """

    window: int
    include_position: bool
    _buf: _Buffer | None

    def __array_finalize__(self, obj: Any) -> None:
        self.window = getattr(obj, "window", 0)
        self.include_position = getattr(obj, "include_position", True)
        self._buf = None

    def __reduce__(self) -> Any:
        fn, args, state = cast("tuple[Any, Any, Any]", super().__reduce__())
        return fn, args, (state, self.window, self.include_position)

    def __setstate__(self, state: Any) -> None:
        base_state, window, include_position = state
        super().__setstate__(base_state)
        self.window = window
        self.include_position = include_position
        self._buf = None
        self.flags.writeable = False


def normalise(features: Any, spec: ObservationSpec) -> NormalisedFeatures:
    """Select, z-score, clip and NaN-fill feature columns for observations.

    Args:
        features: float array ``(T, F)``: columns ``spec.source_names`` when the spec was
            fitted, else exactly ``spec.feature_names`` in order.
        spec: A fitted :class:`ObservationSpec`.

    Returns:
        Read-only float32 :class:`NormalisedFeatures` of shape ``(T, F')``:
        ``clip((x - mean) / std, -clip, clip)``; NaN inputs (feature warm-up only) become
        0.0.

    Raises:
        ValidationError: The spec is not fitted or the columns do not match.
    """
    if spec.mean is None or spec.std is None:
        raise ValidationError(
            "a fitted ObservationSpec expected (call spec.fit first); found mean=None"
        )
    arr = np.asarray(features, dtype=np.float64)
    names = spec.source_names if spec.source_names is not None else spec.feature_names
    if arr.ndim != 2 or arr.shape[1] != len(names):
        raise ValidationError(
            f"features of shape (T, {len(names)}) with columns {list(names)} expected; "
            f"found shape {arr.shape}"
        )
    idx = _column_index(names, spec.feature_names)
    mean = np.asarray(spec.mean, dtype=np.float64)
    std = np.asarray(spec.std, dtype=np.float64)
    z = (arr[:, idx] - mean) / std
    np.clip(z, -spec.clip, spec.clip, out=z)
    buf = _Buffer(np.nan_to_num(z, nan=0.0).astype(np.float32), spec.window, spec.include_position)
    norm = buf.padded[spec.window - 1 :].view(NormalisedFeatures)
    norm.window = spec.window
    norm.include_position = spec.include_position
    norm._buf = buf
    return norm


def _buffer_of(norm: Any, spec: ObservationSpec | None) -> _Buffer:
    if spec is not None:
        window, include_position = spec.window, spec.include_position
    elif isinstance(norm, NormalisedFeatures) and norm.window >= 1:
        window, include_position = norm.window, norm.include_position
    else:
        raise ValidationError(
            "norm from normalise() expected (it carries the window), or pass spec=; "
            f"found {type(norm).__name__}"
        )
    cached = getattr(norm, "_buf", None)
    if cached is not None and cached.window == window:
        buf: _Buffer = cached
        if buf.include_position == include_position:
            return buf
    arr = np.asarray(norm, dtype=np.float32)
    if arr.ndim != 2:
        raise ValidationError(f"norm of shape (T, F') expected; found {arr.shape}")
    if spec is not None and arr.shape[1] != spec.n_features:
        raise ValidationError(
            f"norm with {spec.n_features} columns expected for this spec; found {arr.shape[1]}"
        )
    buf = _Buffer(arr, window, include_position)
    if isinstance(norm, NormalisedFeatures) and spec is None and not norm.flags.writeable:
        # Cache only on read-only arrays, where the copy can never go stale.
        norm._buf = buf
    return buf


def observation_at(
    norm: Any,
    t: int,
    position: float,
    sentiment: float = 0.0,
    *,
    spec: ObservationSpec | None = None,
) -> np.ndarray:
    """The observation at bar ``t``: rows ``t-window+1..t`` (zero-padded), position, sentiment.

    Args:
        norm: Output of :func:`normalise` (or any ``(T, F')`` array when ``spec`` is given).
        t: Bar index, ``0 <= t < T``.
        position: Current position status (-1/0/1) or fraction; ignored when the spec has
            no position slot.
        sentiment: News sentiment for bar ``t``; 0.0 until the news feature fills it.
        spec: Only needed for arrays that did not come from :func:`normalise`.

    Returns:
        A new float32 array of shape ``(obs_dim,)``.

    Raises:
        ValidationError: ``t`` is out of range.
    """
    # Hot path of the RL env step: one attribute read, one slice copy, two stores.
    buf = getattr(norm, "_buf", None) if spec is None else None
    if buf is None:
        buf = _buffer_of(norm, spec)
    if not 0 <= t < buf.n_rows:
        raise ValidationError(f"0 <= t < {buf.n_rows} expected; found t={t}")
    start = t * buf.n_cols
    out = buf.flat[start : start + buf.obs_dim].copy()
    k = buf.k
    if buf.include_position:
        out[k] = position
        out[k + 1] = sentiment
    else:
        out[k] = sentiment
    return out


def observations_batch(
    norm: Any,
    ts: Any,
    position: Any,
    sentiment: Any = 0.0,
    *,
    spec: ObservationSpec | None = None,
) -> np.ndarray:
    """Observations for many bars at once; row ``i`` equals ``observation_at(norm, ts[i], ...)``.

    Args:
        norm: Output of :func:`normalise` (or any ``(T, F')`` array when ``spec`` is given).
        ts: Bar indices, int array of shape ``(N,)``, each in ``[0, T)``.
        position: Scalar or float array ``(N,)``.
        sentiment: Scalar or float array ``(N,)``.
        spec: Only needed for arrays that did not come from :func:`normalise`.

    Returns:
        float32 array of shape ``(N, obs_dim)``.

    Raises:
        ValidationError: An index is out of range or an array has the wrong length.
    """
    buf = _buffer_of(norm, spec)
    include_position = buf.include_position
    idx = np.asarray(ts)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise ValidationError(
            f"ts must be a 1-D int array; found dtype {idx.dtype}, shape {idx.shape}"
        )
    n_rows = buf.n_rows
    if idx.size and (idx.min() < 0 or idx.max() >= n_rows):
        raise ValidationError(
            f"every t in [0, {n_rows}) expected; found min {idx.min()}, max {idx.max()}"
        )
    if idx.size == 0:
        idx = idx.astype(np.intp)
    n = idx.shape[0]
    k = buf.k
    # Row t of this strided view is flat[t * n_cols : t * n_cols + obs_dim] - the same
    # slice observation_at copies - so one gather builds every observation.
    windows = np.lib.stride_tricks.sliding_window_view(buf.flat, buf.obs_dim)[:: buf.n_cols]
    out = windows[idx]
    slots = [position, sentiment] if include_position else [sentiment]
    for j, (name, value) in enumerate(
        zip(["position", "sentiment"][-len(slots) :], slots, strict=True)
    ):
        vals = np.asarray(value, dtype=np.float32)
        if vals.ndim not in (0, 1) or (vals.ndim == 1 and vals.shape[0] != n):
            raise ValidationError(f"{name} must be a scalar or shape ({n},); found {vals.shape}")
        out[:, k + j] = vals
    return out
