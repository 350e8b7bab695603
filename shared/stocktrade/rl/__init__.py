"""Reinforcement learning: the trading env, batched env, PPO training and ONNX export.

Names are resolved lazily so ``from stocktrade.rl import TradingEnv`` loads gymnasium and
numba but not torch; torch and stable-baselines3 load only with the modules that need them
(``vec_env``, ``ppo``, ``callbacks``, ``export``). Nothing outside ``stocktrade.rl`` imports
torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stocktrade.rl.env import EnvConfig, EnvData, TradingEnv, fit_observation_spec
    from stocktrade.rl.export import ExportParityError, export_policy, sample_observations
    from stocktrade.rl.manifest import build_manifest
    from stocktrade.rl.ppo import PPOConfig, build_ppo, make_vec_env, train
    from stocktrade.rl.vec_env import TradingVecEnv

__all__ = [
    "EnvConfig",
    "EnvData",
    "ExportParityError",
    "PPOConfig",
    "TradingEnv",
    "TradingVecEnv",
    "build_manifest",
    "build_ppo",
    "export_policy",
    "fit_observation_spec",
    "make_vec_env",
    "sample_observations",
    "train",
]

_WHERE = {
    "EnvConfig": "env",
    "EnvData": "env",
    "TradingEnv": "env",
    "fit_observation_spec": "env",
    "TradingVecEnv": "vec_env",
    "PPOConfig": "ppo",
    "build_ppo": "ppo",
    "make_vec_env": "ppo",
    "train": "ppo",
    "ExportParityError": "export",
    "export_policy": "export",
    "sample_observations": "export",
    "build_manifest": "manifest",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'stocktrade.rl' has no attribute {name!r}")
    return getattr(importlib.import_module(f"stocktrade.rl.{module}"), name)
