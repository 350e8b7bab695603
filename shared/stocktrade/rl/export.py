"""Export a trained SB3 policy to ONNX, and prove the export computes the same policy.

The exported graph is the actor only: features extractor, policy MLP and action net, with
the I/O contract of :mod:`stocktrade.adapters.inference.onnx_runtime`: input ``"obs"``
float32 ``[batch, obs_dim]``, outputs ``"logits"`` (the action net's raw output) and
``"probs"`` (their softmax), both ``[batch, n_actions]``.

Every export is checked (:func:`check_parity`) on observations taken from the env: the
ONNX Runtime logits must match the SB3 policy's to ``atol`` (1e-5 by default) and the
argmax actions must equal ``model.predict(obs, deterministic=True)``. An export that fails
raises :class:`ExportParityError` and must not be registered.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from gymnasium import spaces
from numpy.typing import NDArray
from stable_baselines3 import PPO

from stocktrade.errors import StocktradeError, ValidationError
from stocktrade.logging import get_logger
from stocktrade.rl.env import TradingEnv

__all__ = [
    "ExportParityError",
    "ExportResult",
    "ParityReport",
    "check_parity",
    "export_onnx",
    "export_policy",
    "sample_observations",
    "save_sb3",
]

log = get_logger(__name__)

ONNX_OPSET = 18


class ExportParityError(StocktradeError):
    """The ONNX export does not compute the same policy as the SB3 model."""


@dataclass(frozen=True)
class ParityReport:
    """Result of a parity check.

    Attributes:
        n_obs: observations compared.
        max_abs_logit_diff: max |ONNX logit - SB3 logit|.
        action_mismatches: observations whose ONNX argmax differs from SB3's action where
            the SB3 top-two logit gap exceeds ``2 * atol`` (real disagreements).
        near_ties: observations whose actions differ only because two logits are within
            ``2 * atol`` of each other (float32 rounding may pick either; not a failure).
        atol: the logit tolerance used.
    """

    n_obs: int
    max_abs_logit_diff: float
    action_mismatches: int
    near_ties: int
    atol: float

    @property
    def ok(self) -> bool:
        """True when the export passes."""
        return self.max_abs_logit_diff <= self.atol and self.action_mismatches == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (for the model version's ``gate`` or manifest)."""
        return {
            "n_obs": self.n_obs,
            "max_abs_logit_diff": self.max_abs_logit_diff,
            "action_mismatches": self.action_mismatches,
            "near_ties": self.near_ties,
            "atol": self.atol,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class ExportResult:
    """An exported policy: the ONNX bytes and their parity report."""

    onnx: bytes
    parity: ParityReport


class _Actor(torch.nn.Module):
    """The deterministic actor of an SB3 ActorCriticPolicy: obs -> (logits, probs)."""

    def __init__(self, policy: Any) -> None:
        super().__init__()
        self.features = policy.pi_features_extractor
        self.mlp = policy.mlp_extractor
        self.action_net = policy.action_net

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.mlp.forward_actor(self.features(obs))
        logits = self.action_net(latent)
        return logits, torch.softmax(logits, dim=-1)


def _check_exportable(model: PPO) -> tuple[int, int]:
    if not isinstance(model.action_space, spaces.Discrete):
        raise ValidationError(
            "only Discrete action spaces export to the logits/probs ONNX contract; "
            f"found {model.action_space}"
        )
    obs_space = model.observation_space
    if not isinstance(obs_space, spaces.Box) or len(obs_space.shape) != 1:
        raise ValidationError(f"a flat Box observation space expected; found {obs_space}")
    return int(obs_space.shape[0]), int(model.action_space.n)


def _reference_logits(model: PPO, obs: NDArray[np.float32]) -> NDArray[np.float32]:
    policy = model.policy
    with torch.no_grad():
        tensor = torch.as_tensor(obs, dtype=torch.float32)
        features = cast(torch.Tensor, policy.extract_features(tensor, policy.pi_features_extractor))
        latent = policy.mlp_extractor.forward_actor(features)
        return np.asarray(policy.action_net(latent).numpy(), dtype=np.float32)


def export_onnx(model: PPO, path: str | Path | None = None) -> bytes:
    """Export the actor of ``model`` to ONNX (no parity check; use :func:`export_policy`).

    Args:
        model: a PPO model with a Discrete action space and a flat Box observation space.
        path: also write the bytes there when given.

    Returns:
        The serialised ONNX model.

    Raises:
        ValidationError: the action or observation space cannot follow the contract.
    """
    obs_dim, _ = _check_exportable(model)
    actor = _Actor(model.policy).eval()
    example = torch.zeros((2, obs_dim), dtype=torch.float32)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The exporter warns about optional torchvision ops and deprecations it uses.
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                actor,
                (example,),
                None,
                input_names=["obs"],
                output_names=["logits", "probs"],
                dynamic_shapes={"obs": {0: torch.export.Dim("batch")}},
                opset_version=ONNX_OPSET,
                dynamo=True,
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    if program is None:  # pragma: no cover - dynamo export always returns a program
        raise ValidationError("torch.onnx.export returned no program")
    data = bytes(program.model_proto.SerializeToString())
    if path is not None:
        Path(path).write_bytes(data)
    return data


def check_parity(
    model: PPO, onnx_model: bytes | str | Path, obs: NDArray[Any], atol: float = 1e-5
) -> ParityReport:
    """Compare the ONNX policy with the SB3 model on ``obs``.

    Args:
        model: the SB3 model.
        onnx_model: the exported ONNX (bytes or path).
        obs: ``[N, obs_dim]`` observations (take them from the env: :func:`sample_observations`).
        atol: max allowed |logit difference|.

    Returns:
        The :class:`ParityReport` (``ok`` tells whether it passed); never raises on a mismatch.
    """
    from stocktrade.adapters.inference.onnx_runtime import OnnxPolicyRuntime

    batch = np.ascontiguousarray(obs, dtype=np.float32)
    runtime = OnnxPolicyRuntime(onnx_model)
    logits, _ = runtime.logits_probs(batch)
    reference = _reference_logits(model, batch)
    sb3_actions, _ = model.predict(batch, deterministic=True)
    sb3_actions = np.asarray(sb3_actions).reshape(-1)
    onnx_actions = np.argmax(logits, axis=1)
    diff = float(np.max(np.abs(logits - reference))) if len(batch) else 0.0
    differ = np.flatnonzero(onnx_actions != sb3_actions)
    top2 = np.sort(reference[differ], axis=1)[:, -2:] if differ.size else np.zeros((0, 2))
    tie = (top2[:, 1] - top2[:, 0]) <= 2 * atol
    return ParityReport(
        n_obs=len(batch),
        max_abs_logit_diff=diff,
        action_mismatches=int((~tie).sum()),
        near_ties=int(tie.sum()),
        atol=atol,
    )


def export_policy(
    model: PPO,
    obs: NDArray[Any],
    *,
    path: str | Path | None = None,
    atol: float = 1e-5,
) -> ExportResult:
    """Export to ONNX and check parity on ``obs``; raise if the export is not faithful.

    Raises:
        ExportParityError: logits differ by more than ``atol`` or an action differs.
        ValidationError: the model cannot follow the I/O contract.
    """
    data = export_onnx(model)
    report = check_parity(model, data, obs, atol=atol)
    if not report.ok:
        raise ExportParityError(
            f"ONNX export differs from the SB3 policy on {report.n_obs} observations: "
            f"max |logit diff| {report.max_abs_logit_diff:.3g} (allowed {atol:g}), "
            f"{report.action_mismatches} action mismatches (expected 0)"
        )
    if path is not None:
        Path(path).write_bytes(data)
    log.info("policy exported", extra={"parity": report.to_dict(), "bytes": len(data)})
    return ExportResult(onnx=data, parity=report)


def sample_observations(env: TradingEnv, n: int = 1000, seed: int = 0) -> NDArray[np.float32]:
    """``n`` observations visited by ``env`` under seeded random actions.

    Random actions make the position state vary (flat, long, short when allowed), so the
    parity check covers every slot of the observation.
    """
    rng = np.random.default_rng(seed)
    env.action_space.seed(int(rng.integers(2**31)))
    out = np.empty((n, env.observation_space.shape[0]), dtype=np.float32)  # type: ignore[index]
    obs, _ = env.reset(seed=int(rng.integers(2**31)))
    for i in range(n):
        out[i] = obs
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    return out


def save_sb3(model: PPO) -> bytes:
    """The SB3 zip of ``model`` as bytes (what goes to the object store as ``uri_sb3``)."""
    buffer = io.BytesIO()
    model.save(buffer)
    return buffer.getvalue()
