"""Training a policy: one use case, two layers (DRAFT for phase 2; the job wiring comes later).

* :func:`train_policy` is pure of storage: bars in, a trained and verified policy out (ONNX
  bytes with a passed parity check, the SB3 zip, the manifest, TensorBoard files).
* :func:`run_training` is the job's use case: it moves the ``runs`` row through its states,
  loads bars from the repository, reports progress and honours cancellation through the
  row, and writes the artifacts to the object store under the run's prefix.

Registering a ``model_versions`` row and the promotion gate (evaluation backtest against a
baseline) are phase 2; :class:`TrainingOutcome` already carries what they need.

torch and stable-baselines3 are imported inside the functions (via ``stocktrade.rl``), so
importing this module stays cheap.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from stocktrade.errors import ValidationError
from stocktrade.logging import get_logger

if TYPE_CHECKING:
    from stocktrade.data.arrays import BarArrays
    from stocktrade.domain.runs import Run
    from stocktrade.ports import BarRepository, ObjectStore, RunRepository
    from stocktrade.rl.callbacks import Progress
    from stocktrade.rl.env import EnvConfig
    from stocktrade.rl.ppo import PPOConfig

__all__ = ["TrainRequest", "TrainingOutcome", "run_training", "train_policy"]

log = get_logger(__name__)

#: Artifact names under the run's prefix.
ONNX_NAME = "policy.onnx"
SB3_NAME = "policy_sb3.zip"
MANIFEST_NAME = "manifest.json"


class TrainRequest(BaseModel):
    """A training request as stored in ``runs.config`` (frozen; unknown fields are errors).

    ``env`` and ``ppo`` hold :class:`~stocktrade.rl.env.EnvConfig` and
    :class:`~stocktrade.rl.ppo.PPOConfig` fields (validated by those models when training
    starts, so this module needs no torch); ``observation`` the ObservationSpec fields
    (``feature_names``, ``window``, ``clip``, ``include_position``) and ``features`` the
    FeatureSpec fields.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_name: str = Field(min_length=1, max_length=100)
    symbols: tuple[str, ...] = Field(min_length=1)
    timeframe: str = "1d"
    train_start: str | None = None
    train_end: str
    env: dict[str, Any] = Field(default_factory=dict)
    ppo: dict[str, Any] = Field(default_factory=dict)
    observation: dict[str, Any] = Field(default_factory=dict)
    features: dict[str, Any] = Field(default_factory=dict)
    parity_observations: int = Field(default=1000, ge=10)

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> TrainRequest:
        """Validate a stored config; raise :class:`ValidationError` naming every problem."""
        try:
            return cls.model_validate(dict(config))
        except PydanticValidationError as exc:
            raise ValidationError(f"invalid training request: {exc}") from exc


@dataclass(frozen=True)
class TrainingOutcome:
    """A trained policy and everything stamped on it.

    Attributes:
        onnx: the exported policy (parity-checked).
        sb3: the SB3 zip.
        manifest: see :func:`stocktrade.rl.manifest.build_manifest`.
        parity: the parity report (dict).
        timesteps: env steps trained.
        cancelled: training stopped on request (artifacts are still the last weights).
        seconds: training wall time.
        tensorboard_files: relative path -> bytes of the TensorBoard event files.
    """

    onnx: bytes
    sb3: bytes
    manifest: dict[str, Any]
    parity: dict[str, Any]
    timesteps: int
    cancelled: bool
    seconds: float
    tensorboard_files: dict[str, bytes] = field(default_factory=dict)


def _configs(request: TrainRequest) -> tuple[EnvConfig, PPOConfig]:
    from stocktrade.rl.env import EnvConfig
    from stocktrade.rl.ppo import PPOConfig

    try:
        return EnvConfig(**request.env), PPOConfig(**request.ppo)
    except PydanticValidationError as exc:
        raise ValidationError(f"invalid env or PPO settings: {exc}") from exc


def train_policy(
    request: TrainRequest,
    bars: Mapping[str, BarArrays],
    *,
    on_progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    workdir: Path | None = None,
    extra_manifest: Mapping[str, Any] | None = None,
) -> TrainingOutcome:
    """Train, export and verify a policy on ``bars`` (history up to ``train_end``).

    Normalisation constants are fitted on ``[train_start, train_end]`` only; episodes run
    inside that range, with earlier bars warming the features up.

    Raises:
        ValidationError: bad request or missing symbols.
        ExportParityError: the ONNX export does not reproduce the SB3 policy.
    """
    from stocktrade.quant.features import FeatureSpec
    from stocktrade.quant.observation import ObservationSpec
    from stocktrade.rl.env import EnvData, TradingEnv, action_labels, fit_observation_spec
    from stocktrade.rl.export import export_policy, sample_observations, save_sb3
    from stocktrade.rl.manifest import build_manifest
    from stocktrade.rl.ppo import build_ppo, make_vec_env, train

    missing = [s for s in request.symbols if s not in bars]
    if missing:
        raise ValidationError(f"bars for {list(request.symbols)} expected; missing {missing}")
    env_config, ppo_config = _configs(request)
    feature_spec = FeatureSpec.from_dict(request.features) if request.features else FeatureSpec()
    base_spec = ObservationSpec(**request.observation)
    series = [bars[s] for s in request.symbols]
    obs_spec = fit_observation_spec(
        series, base_spec, feature_spec, start=request.train_start, end=request.train_end
    )
    datas = [
        EnvData.from_bars(
            b, obs_spec, feature_spec, start=request.train_start, end=request.train_end
        )
        for b in series
    ]
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tb_dir = Path(tmp) / "tensorboard"
        model = build_ppo(
            make_vec_env(datas, env_config, ppo_config), ppo_config, tensorboard_dir=tb_dir
        )
        result = train(
            model,
            ppo_config.total_timesteps,
            on_progress=on_progress,
            should_cancel=should_cancel,
            labels=action_labels(env_config),
            progress_interval_s=5.0,
        )
        obs = sample_observations(
            TradingEnv(datas[0], env_config), request.parity_observations, seed=ppo_config.seed
        )
        exported = export_policy(model, obs)
        sb3 = save_sb3(model)
        model.logger.close()  # flush and close the TensorBoard event files before reading them
        tb_files = {
            str(p.relative_to(tb_dir)): p.read_bytes() for p in tb_dir.rglob("*") if p.is_file()
        }
    first = min(d.ts[d.first] for d in datas)
    last = max(d.ts[d.last] for d in datas)
    manifest = build_manifest(
        symbols=request.symbols,
        timeframe=request.timeframe,
        start=f"{str(first)[:19]}Z",
        end=f"{str(last)[:19]}Z",
        seed=ppo_config.seed,
        feature_spec=feature_spec.to_dict(),
        observation_spec=obs_spec.to_dict(),
        env_config=env_config.model_dump(mode="json"),
        train_config=ppo_config.model_dump(mode="json"),
        files={ONNX_NAME: exported.onnx, SB3_NAME: sb3},
        action_labels=action_labels(env_config),
        metrics={"timesteps": float(result.timesteps), "train_seconds": result.seconds},
        extra={"agent_name": request.agent_name, "cancelled": result.cancelled,
               "parity": exported.parity.to_dict(), **(extra_manifest or {})},
    )  # fmt: skip
    return TrainingOutcome(
        onnx=exported.onnx,
        sb3=sb3,
        manifest=manifest,
        parity=exported.parity.to_dict(),
        timesteps=result.timesteps,
        cancelled=result.cancelled,
        seconds=result.seconds,
        tensorboard_files=tb_files,
    )


def run_training(
    run_id: str,
    *,
    runs: RunRepository,
    bars: BarRepository,
    store: ObjectStore,
    execution: str | None = None,
    workdir: Path | None = None,
) -> Run:
    """The training job: run ``run_id`` from ``queued`` to a terminal state.

    Progress goes to the run row (rate-limited), cancellation is read from it at each
    rollout end. Artifacts land under ``runs/<run_id>/``: ``policy.onnx``,
    ``policy_sb3.zip``, ``manifest.json`` and ``tensorboard/...``.

    Returns:
        The run in its terminal state. Unexpected errors mark the run failed and re-raise
        (the job exits non-zero).
    """
    run = runs.start(run_id, execution=execution)
    try:
        request = TrainRequest.parse(run.config)
        loaded = {
            s: bars.load(s, request.timeframe, None, request.train_end) for s in request.symbols
        }

        def progress(p: Progress) -> None:
            message = f"{p.timesteps}/{p.total_timesteps} steps"
            if p.latest_reward is not None:
                message += f", reward {p.latest_reward:.4g}"
            runs.report_progress(
                run_id, min(p.percent / 100.0, 0.99), eta_seconds=p.eta_seconds, message=message
            )

        def cancelled() -> bool:
            return runs.get(run_id).cancel_requested

        outcome = train_policy(
            request,
            loaded,
            on_progress=progress,
            should_cancel=cancelled,
            workdir=workdir,
            extra_manifest={"run_id": run_id},
        )
        if outcome.cancelled:
            return runs.mark_cancelled(run_id, message=f"cancelled after {outcome.timesteps} steps")
        prefix = f"runs/{run_id}"
        artifacts = {
            "onnx": store.put_bytes(f"{prefix}/{ONNX_NAME}", outcome.onnx),
            "sb3": store.put_bytes(f"{prefix}/{SB3_NAME}", outcome.sb3, "application/zip"),
            "manifest": store.put_bytes(
                f"{prefix}/{MANIFEST_NAME}",
                json.dumps(outcome.manifest, indent=2, sort_keys=True).encode("utf-8"),
                "application/json",
            ),
        }
        for rel, data in outcome.tensorboard_files.items():
            store.put_bytes(f"{prefix}/tensorboard/{rel}", data)
        artifacts["tensorboard"] = store.uri(f"{prefix}/tensorboard/")
        metrics = {
            "timesteps": outcome.timesteps,
            "train_seconds": outcome.seconds,
            "parity_max_abs_logit_diff": outcome.parity["max_abs_logit_diff"],
            "onnx_sha256": outcome.manifest["files"][ONNX_NAME]["sha256"],
        }
        return runs.succeed(run_id, metrics=metrics, artifacts=artifacts, message="trained")
    except Exception as exc:
        log.exception("training failed", extra={"run_id": run_id})
        runs.fail(run_id, f"{type(exc).__name__}: {exc}")
        raise
