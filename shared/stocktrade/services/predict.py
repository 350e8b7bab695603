"""Policy inference over HTTP (the ``predict`` function): the ONNX CPU fallback path.

Request: ``{"obs": [...]}`` (or ``"state"``), optionally ``"model_version"`` (a model
version id) or ``"agent"`` (an agent name: its promoted version). ``obs`` is one observation
(``[obs_dim]``) or a batch (``[[...], ...]``). Response::

    {"action": "buy", "action_id": 1, "confidence": 0.71, "probs": [0.1, 0.71, 0.19],
     "model_version": "<uuid>", "backend": "onnx-cpu", "latency_us": 41.3}

For a batch, ``action``, ``action_id``, ``confidence`` and ``probs`` are lists.

Models are looked up and loaded once per instance (cached by model version id); the ONNX
bytes are checked against the version's recorded sha256 before use.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import numpy as np
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StringConstraints

from stocktrade.domain.actions import Action
from stocktrade.errors import ValidationError
from stocktrade.services.policy_bytes import read_verified_policy

__all__ = ["PolicyModel", "PolicyPredictor", "PolicyRuntime", "PredictRequest"]

BACKEND = "onnx-cpu"


class PredictRequest(BaseModel):
    """Body of a predict call."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    obs: Annotated[
        list[float] | list[list[float]],
        Field(min_length=1, validation_alias=AliasChoices("obs", "state")),
    ]
    model_version: str | None = None
    agent: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None


@dataclass(frozen=True, slots=True)
class PolicyModel:
    """A stored model version: where its ONNX file is and what it must hash to."""

    model_version_id: str
    agent_name: str
    version: int
    uri_onnx: str
    sha256: str


class PolicyRuntime(Protocol):
    """What the predictor needs from a runtime (``OnnxPolicyRuntime``)."""

    obs_dim: int
    n_actions: int

    def logits_probs(self, obs: Any) -> tuple[Any, Any]: ...


class PolicyPredictor:
    """Resolves, loads (once) and runs policies.

    Args:
        find: ``(model_version, agent) -> PolicyModel``; raises ``NotFoundError``.
        read: ``uri -> bytes`` of the ONNX file.
        make_runtime: ``bytes -> PolicyRuntime`` (``OnnxPolicyRuntime``).
    """

    def __init__(
        self,
        find: Callable[[str | None, str | None], PolicyModel],
        read: Callable[[str], bytes],
        make_runtime: Callable[[bytes], PolicyRuntime],
    ) -> None:
        self._find = find
        self._read = read
        self._make_runtime = make_runtime
        self._cache: dict[str, PolicyRuntime] = {}
        self._lock = threading.Lock()

    def runtime(self, model: PolicyModel) -> PolicyRuntime:
        """The loaded runtime of ``model`` (loaded and hash-checked on first use)."""
        runtime = self._cache.get(model.model_version_id)
        if runtime is None:
            with self._lock:
                runtime = self._cache.get(model.model_version_id)
                if runtime is None:
                    data = read_verified_policy(
                        self._read,
                        model.uri_onnx,
                        model.sha256,
                        model_version_id=model.model_version_id,
                    )
                    runtime = self._make_runtime(data)
                    self._cache[model.model_version_id] = runtime
        return runtime

    def predict(self, request: PredictRequest) -> dict[str, Any]:
        """Run the policy the request names on its observation(s).

        Raises:
            ValidationError: no model named, or ``obs`` has the wrong size or ragged rows.
            NotFoundError: the model version or agent's promoted version does not exist.
        """
        if request.model_version is None and request.agent is None:
            raise ValidationError("predict needs 'model_version' or 'agent' to pick a policy")
        model = self._find(request.model_version, request.agent)
        runtime = self.runtime(model)
        single = not isinstance(request.obs[0], list)
        try:
            obs = np.asarray([request.obs] if single else request.obs, dtype=np.float32)
        except ValueError as exc:
            raise ValidationError(f"obs rows must all have the same length: {exc}") from exc
        if obs.ndim != 2 or obs.shape[1] != runtime.obs_dim:
            raise ValidationError(
                f"obs must have {runtime.obs_dim} values per observation, found shape "
                f"{list(obs.shape[1:] if single else obs.shape)}"
            )
        if not np.isfinite(obs).all():
            raise ValidationError("obs must be finite numbers")
        started = time.perf_counter()
        logits, probs = runtime.logits_probs(obs)
        latency_us = (time.perf_counter() - started) * 1e6
        ids = np.argmax(logits, axis=1)
        confidence = probs[np.arange(len(ids)), ids]
        names = [_action_name(int(i)) for i in ids]
        out: dict[str, Any] = {
            "action": names[0] if single else names,
            "action_id": int(ids[0]) if single else [int(i) for i in ids],
            "confidence": float(confidence[0]) if single else [float(c) for c in confidence],
            "probs": probs[0].tolist() if single else probs.tolist(),
            "model_version": model.model_version_id,
            "backend": BACKEND,
            "latency_us": round(latency_us, 1),
        }
        return out


def _action_name(action_id: int) -> str:
    try:
        return Action(action_id).name.lower()
    except ValueError:
        return str(action_id)
