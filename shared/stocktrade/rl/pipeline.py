"""Bars in, a trained, exported and verified policy out; and a policy back as a strategy.

The torch side of the training use case (:mod:`stocktrade.services.training` runs the run,
stores the artifacts and gates the result; it receives these functions from the composition
root, so services never import torch or the inference adapters):

* :func:`train_policy` fits the observation normalisation on the training range only, trains
  PPO on it (seeded, TensorBoard scalars, progress and cancellation hooks), exports the actor
  to ONNX with the parity check and builds the manifest;
* :func:`policy_strategy` turns ONNX bytes and their manifest into the
  :class:`~stocktrade.strategies.onnx_policy.OnnxPolicyStrategy` the backtest engine runs, with
  exactly the features, normalisation constants and action mapping the policy was trained on.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError as PydanticValidationError

from stocktrade.errors import ValidationError
from stocktrade.logging import get_logger

if TYPE_CHECKING:
    from stocktrade.data.arrays import BarArrays
    from stocktrade.rl.callbacks import Progress
    from stocktrade.strategies.onnx_policy import OnnxPolicyStrategy

__all__ = ["ONNX_NAME", "SB3_NAME", "TrainingOutcome", "policy_strategy", "train_policy"]

log = get_logger(__name__)

#: Artifact names the manifest lists (and the training job stores under ``runs/<id>/``).
ONNX_NAME = "policy.onnx"
SB3_NAME = "policy_sb3.zip"


@dataclass(frozen=True)
class TrainingOutcome:
    """A trained policy and everything stamped on it.

    Attributes:
        onnx: the exported policy (parity-checked); empty when cancelled.
        sb3: the SB3 zip; empty when cancelled.
        manifest: see :func:`stocktrade.rl.manifest.build_manifest` (empty when cancelled).
        parity: the parity report (dict; empty when cancelled).
        timesteps: env steps trained.
        cancelled: training stopped on request (nothing was exported).
        seconds: training wall time (``learn`` only).
        fps: env steps per second of training.
        latest_reward: mean reward of the last finished episodes, if any.
        tensorboard_files: relative path -> bytes of the TensorBoard event files.
    """

    onnx: bytes
    sb3: bytes
    manifest: dict[str, Any]
    parity: dict[str, Any]
    timesteps: int
    cancelled: bool
    seconds: float
    fps: float
    latest_reward: float | None
    tensorboard_files: dict[str, bytes] = field(default_factory=dict)


def _specs(
    env: Mapping[str, Any],
    ppo: Mapping[str, Any],
    features: Mapping[str, Any],
    observation: Mapping[str, Any],
) -> tuple[Any, Any, Any, Any]:
    from stocktrade.quant.features import FeatureSpec
    from stocktrade.quant.observation import ObservationSpec
    from stocktrade.rl.env import EnvConfig
    from stocktrade.rl.ppo import PPOConfig

    try:
        env_config = EnvConfig(**dict(env))
        ppo_config = PPOConfig(**dict(ppo))
    except PydanticValidationError as exc:
        raise ValidationError(f"invalid env or PPO settings: {exc}") from exc
    feature_spec = FeatureSpec.from_dict(features) if features else FeatureSpec()
    base = ObservationSpec.from_dict(observation) if observation else ObservationSpec()
    return env_config, ppo_config, feature_spec, base


def train_policy(
    bars: Sequence[BarArrays],
    *,
    train_start: str | None,
    train_end: str,
    timeframe: str = "1d",
    env: Mapping[str, Any] | None = None,
    ppo: Mapping[str, Any] | None = None,
    features: Mapping[str, Any] | None = None,
    observation: Mapping[str, Any] | None = None,
    parity_observations: int = 1000,
    on_progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    progress_interval_s: float = 2.0,
    workdir: Path | None = None,
    tb_run_name: str = "ppo",
    extra_manifest: Mapping[str, Any] | None = None,
) -> TrainingOutcome:
    """Train, export and verify a policy on the ``[train_start, train_end]`` range of ``bars``.

    Normalisation constants are fitted on the training range only; episodes run inside it,
    with earlier bars warming the features up (pass them in). Nothing after ``train_end`` is
    looked at: pass bars that end there, or later bars are simply ignored.

    Args:
        bars: one series per training symbol (history before ``train_start`` included).
        train_start, train_end: the training range (ISO dates/times, UTC, inclusive;
            ``train_end`` as a plain date includes that whole day).
        timeframe: bar timeframe, stamped into the manifest.
        env, ppo, features, observation: ``EnvConfig``, ``PPOConfig``, ``FeatureSpec`` and
            ``ObservationSpec`` fields (defaults when empty).
        parity_observations: env observations the ONNX export is checked on.
        on_progress: called at rollout ends (at most every ``progress_interval_s``) and at
            the end, with percent, ETA and the latest reward.
        should_cancel: checked at every rollout end; True stops training, nothing is exported.
        workdir: where temporary TensorBoard files go (a temp folder inside it).
        tb_run_name: TensorBoard run name (``<name>_1/`` in the event files' paths).
        extra_manifest: stamped into ``manifest["extra"]`` (run id, agent, windows ...).

    Raises:
        ValidationError: bad settings, or too few bars in the range.
        ExportParityError: the ONNX export does not reproduce the SB3 policy.
    """
    import numpy as np

    from stocktrade.rl.env import EnvData, TradingEnv, action_labels, fit_observation_spec
    from stocktrade.rl.export import export_policy, sample_observations, save_sb3
    from stocktrade.rl.manifest import build_manifest
    from stocktrade.rl.ppo import build_ppo, make_vec_env, train

    if not bars:
        raise ValidationError("training needs bars of at least one symbol; found none")
    env_config, ppo_config, feature_spec, base_spec = _specs(
        env or {}, ppo or {}, features or {}, observation or {}
    )
    end = _inclusive_end(train_end)
    series = [b.between(None, end) for b in bars]
    obs_spec = fit_observation_spec(series, base_spec, feature_spec, start=train_start, end=end)
    datas = [
        EnvData.from_bars(b, obs_spec, feature_spec, start=train_start, end=end) for b in series
    ]
    labels = action_labels(env_config)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="stocktrade-train-") as tmp:
        tb_dir = Path(tmp) / "tensorboard"
        model = build_ppo(
            make_vec_env(datas, env_config, ppo_config), ppo_config, tensorboard_dir=tb_dir
        )
        result = train(
            model,
            ppo_config.total_timesteps,
            on_progress=on_progress,
            should_cancel=should_cancel,
            labels=labels,
            progress_interval_s=progress_interval_s,
            tb_log_name=tb_run_name,
        )
        model.logger.close()  # flush and close the TensorBoard event files before reading
        tb_files = {
            p.relative_to(tb_dir).as_posix(): p.read_bytes()
            for p in sorted(tb_dir.rglob("*"))
            if p.is_file()
        }
        latest = None if result.last_progress is None else result.last_progress.latest_reward
        fps = result.timesteps / result.seconds if result.seconds > 0 else 0.0
        if result.cancelled:
            return TrainingOutcome(
                onnx=b"", sb3=b"", manifest={}, parity={}, timesteps=result.timesteps,
                cancelled=True, seconds=result.seconds, fps=fps, latest_reward=latest,
                tensorboard_files=tb_files,
            )  # fmt: skip
        obs = sample_observations(
            TradingEnv(datas[0], env_config), parity_observations, seed=ppo_config.seed
        )
        exported = export_policy(model, obs)
        sb3 = save_sb3(model)
    first = min(d.ts[d.first] for d in datas)
    last = max(d.ts[d.last] for d in datas)
    stamp = {
        "symbols": [d.symbol for d in datas],
        "parity": exported.parity.to_dict(),
        "train_range": {"start": train_start, "end": train_end},
        "bars": {
            d.symbol: {"first_decision": _iso(d.ts[d.first]), "last": _iso(d.ts[d.last]),
                       "episode_bars": int(d.last - d.first + 1)}
            for d in datas
        },
        **dict(extra_manifest or {}),
    }  # fmt: skip
    manifest = build_manifest(
        symbols=[d.symbol for d in datas],
        timeframe=timeframe,
        start=_iso(first),
        end=_iso(last),
        seed=ppo_config.seed,
        feature_spec=feature_spec.to_dict(),
        observation_spec=obs_spec.to_dict(),
        env_config=env_config.model_dump(mode="json"),
        train_config=ppo_config.model_dump(mode="json"),
        files={ONNX_NAME: exported.onnx, SB3_NAME: sb3},
        action_labels=labels,
        metrics={
            "timesteps": float(result.timesteps),
            "train_seconds": result.seconds,
            "fps": fps,
            **({} if latest is None or not np.isfinite(latest) else {"latest_reward": latest}),
        },
        extra=stamp,
    )
    return TrainingOutcome(
        onnx=exported.onnx,
        sb3=sb3,
        manifest=manifest,
        parity=exported.parity.to_dict(),
        timesteps=result.timesteps,
        cancelled=False,
        seconds=result.seconds,
        fps=fps,
        latest_reward=latest,
        tensorboard_files=tb_files,
    )


def _iso(ts: Any) -> str:
    import numpy as np

    return str(np.datetime64(ts, "s")) + "Z"


def _inclusive_end(value: str) -> str:
    """A plain date as an end bound means the whole day."""
    text = str(value).strip()
    if len(text) == 10 and text[4] == "-" and text[7] == "-":
        return text + "T23:59:59.999999"
    return text.removesuffix("Z")


def policy_strategy(onnx: bytes, manifest: Mapping[str, Any]) -> OnnxPolicyStrategy:
    """The backtest strategy of an exported policy, configured from its manifest.

    Raises:
        ValidationError: the manifest lacks the specs, or the policy's action mode is not the
            HOLD/BUY/SELL mapping the strategy (and the live chain) use.
    """
    from stocktrade.adapters.inference.onnx_runtime import OnnxPolicyRuntime
    from stocktrade.quant.features import FeatureSpec
    from stocktrade.quant.observation import ObservationSpec
    from stocktrade.strategies.onnx_policy import OnnxPolicyStrategy

    missing = [k for k in ("feature_spec", "observation_spec", "env_config") if k not in manifest]
    if missing:
        raise ValidationError(f"policy manifest lacks {missing}; cannot rebuild its observations")
    env = manifest["env_config"]
    if env.get("action_mode", "discrete") != "discrete":
        raise ValidationError(
            "only discrete (HOLD/BUY/SELL) policies run as a backtest strategy; "
            f"found action_mode {env.get('action_mode')!r}"
        )
    extra = manifest.get("extra") or {}
    label = extra.get("agent") or "policy"
    version = extra.get("version")
    return OnnxPolicyStrategy(
        OnnxPolicyRuntime(onnx),
        feature_spec=FeatureSpec.from_dict(manifest["feature_spec"]),
        obs_spec=ObservationSpec.from_dict(manifest["observation_spec"]),
        allow_short=bool(env.get("allow_short", False)),
        size=float(env.get("position_size", 1.0)),
        name=f"{label}:{version}" if version else str(label),
    )
