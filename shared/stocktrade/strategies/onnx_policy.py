"""A trained policy (ONNX) as a strategy: features -> observation -> action -> target.

Per bar, :class:`OnnxPolicyStrategy` updates its features incrementally
(:class:`stocktrade.quant.features.IncrementalFeatures`), normalises the row with the model's
:class:`stocktrade.quant.observation.ObservationSpec`, builds the observation for the position
state held (``-1``/``0``/``+1``; see :mod:`stocktrade.domain.actions`) and asks the runtime
for the deterministic action (argmax of the logits). The action becomes a target position
with :func:`stocktrade.domain.actions.action_target_table`.

The policy first decides on bar ``feature_spec.warmup + obs_spec.window - 1``: the first bar
whose whole observation window holds defined (warmed-up) features. Before that it has no
opinion.

For backtests, :meth:`OnnxPolicyStrategy.batch_actions` evaluates the policy on every bar for
each of the three position states in batched runtime calls; the engine then runs the
sequential loop picking the action of the state actually held, which reproduces the
bar-by-bar path exactly (a test checks it on real data).

The runtime is any object with ``act(obs[B, D]) -> int64[B]`` and
``act_one(obs[D]) -> (int, probs)`` (or just ``logits_probs``), e.g.
:class:`stocktrade.adapters.inference.onnx_runtime.OnnxPolicyRuntime`, which is built for you
when you pass a path or bytes (imported lazily: onnxruntime is never loaded at import time).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from stocktrade.domain.actions import NO_ACTION, POSITION_STATES, action_target_table
from stocktrade.errors import ValidationError
from stocktrade.quant.features import FeatureSpec, IncrementalFeatures, compute_features
from stocktrade.quant.observation import (
    ObservationSpec,
    normalise,
    observation_at,
    observations_batch,
)
from stocktrade.strategies.base import BarInput, PositionView, Signal

if TYPE_CHECKING:
    from stocktrade.data.arrays import BarArrays

__all__ = ["OnnxPolicyStrategy", "PolicyRuntime"]

#: Rows per batched runtime call (bounds memory on long histories; results do not depend on it).
BATCH_ROWS = 1 << 17


class PolicyRuntime(Protocol):
    """What the strategy needs from an inference backend."""

    def logits_probs(self, obs: Any) -> tuple[NDArray[np.float32], NDArray[np.float32]]: ...


def _load_runtime(model: Any) -> Any:
    if hasattr(model, "logits_probs"):
        return model
    if isinstance(model, (str, Path, bytes, bytearray)):
        from stocktrade.adapters.inference.onnx_runtime import OnnxPolicyRuntime

        return OnnxPolicyRuntime(bytes(model) if isinstance(model, bytearray) else model)
    raise ValidationError(
        f"model must be a path, ONNX bytes or a runtime with logits_probs(), found "
        f"{type(model).__name__}"
    )


class OnnxPolicyStrategy:
    """A discrete-action (HOLD/BUY/SELL) policy served from an ONNX file.

    Args:
        model: path or bytes of an ONNX policy (input ``"obs"`` float32 ``[batch, obs_dim]``,
            outputs ``"logits"``, ``"probs"``), or a runtime object.
        feature_spec: the features the policy was trained on.
        obs_spec: the fitted observation spec of the policy (normalisation constants).
        allow_short: map SELL to a short target (else to flat).
        size: target magnitude of BUY/SELL as a fraction of equity.
        name: strategy name for reports.

    Raises:
        ValidationError: the observation spec is not fitted, names features the feature spec
            does not produce, or its ``obs_dim`` differs from the model's.
    """

    def __init__(
        self,
        model: Any,
        *,
        feature_spec: FeatureSpec,
        obs_spec: ObservationSpec,
        allow_short: bool = False,
        size: float = 1.0,
        name: str = "onnx_policy",
    ) -> None:
        if not obs_spec.is_fitted:
            raise ValidationError("obs_spec must be fitted (mean/std set); found an unfitted spec")
        source = obs_spec.source_names or obs_spec.feature_names
        if list(source) != feature_spec.names():
            raise ValidationError(
                f"obs_spec expects feature columns {list(source)}, the feature spec produces "
                f"{feature_spec.names()}"
            )
        self._runtime = _load_runtime(model)
        obs_dim = getattr(self._runtime, "obs_dim", obs_spec.obs_dim)
        if obs_dim != obs_spec.obs_dim:
            raise ValidationError(
                f"model obs_dim is {obs_dim}, the observation spec gives {obs_spec.obs_dim}"
            )
        self.feature_spec = feature_spec
        self.obs_spec = obs_spec
        self.allow_short = bool(allow_short)
        self._table = action_target_table(allow_short=self.allow_short, size=size)
        self._size = float(size)
        self._name = name
        self.reset()

    @property
    def name(self) -> str:
        return self._name

    @property
    def warmup(self) -> int:
        """Index of the first bar the policy decides on."""
        return self.feature_spec.warmup + self.obs_spec.window - 1

    @property
    def action_table(self) -> tuple[float, float, float]:
        return self._table

    def params(self) -> dict[str, Any]:
        return {
            "feature_spec": self.feature_spec.to_dict(),
            "obs_spec": self.obs_spec.to_dict(),
            "allow_short": self.allow_short,
            "size": self._size,
        }

    def reset(self) -> None:
        self._features = IncrementalFeatures(self.feature_spec)
        self._window = np.zeros((self.obs_spec.window, self.obs_spec.n_features), dtype=np.float32)
        self._t = -1

    def _act_one(self, obs: NDArray[np.float32]) -> tuple[int, tuple[float, ...]]:
        act_one = getattr(self._runtime, "act_one", None)
        if act_one is not None:
            action, probs = act_one(obs)
            return int(action), tuple(float(p) for p in probs)
        logits, probs = self._runtime.logits_probs(obs[None, :])
        return int(np.argmax(logits[0])), tuple(float(p) for p in probs[0])

    def on_bar(self, bar: BarInput, position: PositionView) -> Signal:
        row = self._features.update(bar.open, bar.high, bar.low, bar.close, bar.volume)
        self._t += 1
        norm_row = normalise(row[None, :], self.obs_spec)
        self._window[:-1] = self._window[1:]
        self._window[-1] = norm_row[0]
        if self._t < self.warmup:
            return Signal()
        obs = observation_at(
            self._window, self.obs_spec.window - 1, float(position.state), spec=self.obs_spec
        )
        action, probs = self._act_one(obs)
        # HOLD maps to NaN: keep the target in force (exactly what the batched path does).
        return Signal(self._table[action], action, probs)

    def batch_actions(self, bars: BarArrays) -> NDArray[np.int64]:
        """Actions for every bar under each position state; see the module docs."""
        n = len(bars.close)
        out = np.full((n, len(POSITION_STATES)), NO_ACTION, dtype=np.int64)
        first = self.warmup
        if first >= n:
            return out
        feats = compute_features(
            bars.open, bars.high, bars.low, bars.close, bars.volume, self.feature_spec
        )
        norm = normalise(feats, self.obs_spec)
        for j, state in enumerate(POSITION_STATES):
            for lo in range(first, n, BATCH_ROWS):
                idx = np.arange(lo, min(n, lo + BATCH_ROWS))
                obs = observations_batch(norm, idx, float(state))
                logits, _ = self._runtime.logits_probs(obs)
                out[idx, j] = np.argmax(logits, axis=1)
        return out
