"""PPO (stable-baselines3) from a config: build, train with hooks, reproducibly.

:class:`PPOConfig` holds every hyperparameter a run needs (it is stamped into the model
manifest and hashed). :func:`make_vec_env` builds the batched env over the training symbols,
:func:`build_ppo` the model, and :func:`train` runs it with TensorBoard metrics, a progress
hook and a cancellation hook (see :mod:`stocktrade.rl.callbacks`).

Reproducibility: the seed seeds Python, numpy, torch and every env (env ``i`` gets
``seed + i``); ``torch_threads`` pins intra-op threads (1 by default, which also makes CPU
results bit-stable). Two runs with the same config and data give the same weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor

from stocktrade.errors import ConfigError
from stocktrade.logging import get_logger
from stocktrade.rl.callbacks import (
    CancellationCallback,
    Progress,
    ProgressCallback,
    TrainingMetricsCallback,
)
from stocktrade.rl.env import EnvConfig, EnvData, TradingEnv, action_labels
from stocktrade.rl.vec_env import TradingVecEnv

__all__ = ["PPOConfig", "TrainResult", "build_ppo", "make_vec_env", "train"]

log = get_logger(__name__)

_ACTIVATIONS: dict[str, type[torch.nn.Module]] = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


class PPOConfig(BaseModel):
    """PPO hyperparameters and run settings (frozen; unknown fields are errors)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    total_timesteps: int = Field(default=100_000, ge=1)
    n_envs: int = Field(default=8, ge=1)
    vec_env: Literal["batched", "dummy"] = "batched"
    """``batched``: :class:`TradingVecEnv` (numba); ``dummy``: SB3 DummyVecEnv of TradingEnv."""
    n_steps: int = Field(default=256, ge=1)
    """Steps per env per rollout (rollout size = n_steps * n_envs)."""
    batch_size: int = Field(default=256, ge=1)
    n_epochs: int = Field(default=10, ge=1)
    learning_rate: float = Field(default=3e-4, gt=0.0)
    gamma: float = Field(default=0.99, gt=0.0, le=1.0)
    gae_lambda: float = Field(default=0.95, ge=0.0, le=1.0)
    clip_range: float = Field(default=0.2, gt=0.0)
    ent_coef: float = Field(default=0.01, ge=0.0)
    vf_coef: float = Field(default=0.5, ge=0.0)
    max_grad_norm: float = Field(default=0.5, gt=0.0)
    normalize_advantage: bool = True
    target_kl: float | None = Field(default=None, gt=0.0)
    net_arch: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of both the policy and the value network."""
    activation: Literal["tanh", "relu"] = "tanh"
    seed: int = Field(default=0, ge=0)
    torch_threads: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> PPOConfig:
        if not self.net_arch or any(h < 1 for h in self.net_arch):
            raise ValueError(f"net_arch must list positive layer sizes; found {self.net_arch}")
        rollout = self.n_steps * self.n_envs
        if self.batch_size > rollout:
            raise ValueError(
                f"batch_size must be <= n_steps * n_envs = {rollout}; found {self.batch_size}"
            )
        return self


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained PPO model (also when cancelled: the last update's weights).
        timesteps: env steps taken.
        cancelled: True when the cancellation hook stopped training.
        seconds: wall time of ``learn``.
        last_progress: the final progress report, if a progress hook was given.
    """

    model: PPO
    timesteps: int
    cancelled: bool
    seconds: float
    last_progress: Progress | None


def make_vec_env(datas: Sequence[EnvData], env_config: EnvConfig, config: PPOConfig) -> VecEnv:
    """The training env: ``config.n_envs`` envs over ``datas`` with episode statistics.

    Envs are assigned to symbols round-robin; with ``env_config.random_start`` each env
    samples its own start bars.
    """
    if config.vec_env == "batched":
        return VecMonitor(TradingVecEnv(datas, env_config, config.n_envs))
    fns = [partial(_monitored, datas[i % len(datas)], env_config) for i in range(config.n_envs)]
    return DummyVecEnv(fns)  # type: ignore[arg-type]


def _monitored(data: EnvData, env_config: EnvConfig) -> Monitor:
    return Monitor(TradingEnv(data, env_config))


def build_ppo(
    env: VecEnv | Any,
    config: PPOConfig,
    *,
    tensorboard_dir: str | Path | None = None,
    verbose: int = 0,
) -> PPO:
    """Build an SB3 PPO (MlpPolicy, CPU) from ``config``.

    Sets ``torch.set_num_threads(config.torch_threads)`` process-wide (training owns its
    process). ``env`` is a VecEnv (see :func:`make_vec_env`) or a single gymnasium env.

    Raises:
        ConfigError: ``env.num_envs`` differs from ``config.n_envs``.
    """
    n_envs = getattr(env, "num_envs", 1)
    if n_envs != config.n_envs:
        raise ConfigError(f"config.n_envs is {config.n_envs}; the env has {n_envs} envs")
    torch.set_num_threads(config.torch_threads)
    policy_kwargs = {
        "net_arch": {"pi": list(config.net_arch), "vf": list(config.net_arch)},
        "activation_fn": _ACTIVATIONS[config.activation],
    }
    return PPO(
        "MlpPolicy",
        env,
        learning_rate=config.learning_rate,
        n_steps=config.n_steps,
        batch_size=config.batch_size,
        n_epochs=config.n_epochs,
        gamma=config.gamma,
        gae_lambda=config.gae_lambda,
        clip_range=config.clip_range,
        ent_coef=config.ent_coef,
        vf_coef=config.vf_coef,
        max_grad_norm=config.max_grad_norm,
        normalize_advantage=config.normalize_advantage,
        target_kl=config.target_kl,
        policy_kwargs=policy_kwargs,
        tensorboard_log=None if tensorboard_dir is None else str(tensorboard_dir),
        seed=config.seed,
        device="cpu",
        verbose=verbose,
    )


def train(
    model: PPO,
    total_timesteps: int,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    labels: Sequence[str] | None = None,
    progress_interval_s: float = 0.0,
    extra_callbacks: Sequence[BaseCallback] = (),
    tb_log_name: str = "ppo",
) -> TrainResult:
    """Run ``model.learn`` with metrics, progress and cancellation hooks.

    Args:
        model: from :func:`build_ppo`.
        total_timesteps: env steps to train for.
        on_progress: called at each rollout end and at the end (see ``ProgressCallback``).
        should_cancel: checked at each rollout end; True stops training.
        labels: discrete action names for the action histogram (``action_labels(config)``).
        progress_interval_s: minimum seconds between progress reports.
        extra_callbacks: more SB3 callbacks.
        tb_log_name: TensorBoard run name (under the model's ``tensorboard_log``).

    Returns:
        A :class:`TrainResult`; ``cancelled`` tells a stopped run from a finished one.
    """
    callbacks: list[BaseCallback] = [TrainingMetricsCallback(list(labels or []))]
    progress_cb = None
    if on_progress is not None:
        progress_cb = ProgressCallback(on_progress, total_timesteps, progress_interval_s)
        callbacks.append(progress_cb)
    cancel_cb = None
    if should_cancel is not None:
        cancel_cb = CancellationCallback(should_cancel)
        callbacks.append(cancel_cb)
    callbacks.extend(extra_callbacks)
    started = time.monotonic()
    model.learn(
        total_timesteps=total_timesteps,
        callback=CallbackList(callbacks),
        tb_log_name=tb_log_name,
        progress_bar=False,
    )
    seconds = time.monotonic() - started
    cancelled = bool(cancel_cb is not None and cancel_cb.cancelled)
    log.info(
        "training finished",
        extra={"timesteps": model.num_timesteps, "cancelled": cancelled, "seconds": seconds},
    )
    return TrainResult(
        model=model,
        timesteps=int(model.num_timesteps),
        cancelled=cancelled,
        seconds=seconds,
        last_progress=None if progress_cb is None else progress_cb.last,
    )


def default_labels(env_config: EnvConfig) -> list[str]:
    """Action names for histograms and manifests (alias of ``env.action_labels``)."""
    return action_labels(env_config)
