"""Reward shaping for :class:`~stocktrade.rl.env.TradingEnv` (gymnasium wrappers).

The env's own reward is the portfolio change (pnl, log return, or a mean-variance variant);
anything that reshapes it for learning lives here, so the env stays the plain accounting
that backtests reproduce. Wrappers change rewards only, never observations or actions, so a
policy trained under them exports and backtests exactly like one trained without.
"""

from __future__ import annotations

import math
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from stocktrade.errors import ValidationError

__all__ = ["DifferentialSharpeReward", "DrawdownPenalty", "ScaleReward"]


class ScaleReward(gym.RewardWrapper[np.ndarray, Any]):
    """Multiply rewards by ``scale`` (daily log returns are ~1e-2; PPO likes ~1)."""

    def __init__(self, env: gym.Env[np.ndarray, Any], scale: float) -> None:
        super().__init__(env)
        if not (math.isfinite(scale) and scale > 0):
            raise ValidationError(f"scale must be finite and > 0; found {scale}")
        self.scale = float(scale)

    def reward(self, reward: SupportsFloat) -> float:
        return float(reward) * self.scale


class DifferentialSharpeReward(gym.Wrapper[np.ndarray, Any, np.ndarray, Any]):
    """Replace the reward by the differential Sharpe ratio of the per-step returns.

    Moody & Saffell (1998): with exponential moving estimates ``A`` (mean) and ``B``
    (second moment) of the return ``R_t`` at rate ``eta``,
    ``D_t = (B_{t-1} dA_t - A_{t-1} dB_t / 2) / (B_{t-1} - A_{t-1}^2)^{3/2}``, the
    first-order effect of ``R_t`` on the Sharpe ratio. The wrapped env's reward is taken
    as ``R_t``, so use ``reward="log_return"`` (or ``"pnl"``). Estimates restart each episode;
    ``D_t`` is 0 until the variance estimate is positive.

    Args:
        env: a TradingEnv (or a wrapper of one).
        eta: adaptation rate in (0, 1).
    """

    def __init__(self, env: gym.Env[np.ndarray, Any], eta: float = 0.01) -> None:
        super().__init__(env)
        if not 0.0 < eta < 1.0:
            raise ValidationError(f"eta must be in (0, 1); found {eta}")
        self.eta = float(eta)
        self._a = 0.0
        self._b = 0.0

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        self._a = 0.0
        self._b = 0.0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        r = float(reward)
        a, b = self._a, self._b
        da = r - a
        db = r * r - b
        var = b - a * a
        shaped = (b * da - 0.5 * a * db) / var**1.5 if var > 1e-12 else 0.0
        self._a = a + self.eta * da
        self._b = b + self.eta * db
        return obs, shaped, terminated, truncated, info


class DrawdownPenalty(gym.Wrapper[np.ndarray, Any, np.ndarray, Any]):
    """Subtract ``coef`` times each step's increase in drawdown (fraction of peak equity).

    Reads equity and peak from the unwrapped env's ``portfolio``; only deepening drawdowns
    cost, so recovering is never penalised.
    """

    def __init__(self, env: gym.Env[np.ndarray, Any], coef: float = 1.0) -> None:
        super().__init__(env)
        if not (math.isfinite(coef) and coef >= 0):
            raise ValidationError(f"coef must be finite and >= 0; found {coef}")
        self.coef = float(coef)
        self._dd = 0.0

    def _drawdown(self) -> float:
        pf = self.env.unwrapped.portfolio  # type: ignore[attr-defined]
        return 0.0 if pf.peak_equity <= 0 else 1.0 - pf.equity / pf.peak_equity

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        out = self.env.reset(**kwargs)
        self._dd = 0.0
        return out

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        dd = self._drawdown()
        penalty = self.coef * max(0.0, dd - self._dd)
        self._dd = dd
        return obs, float(reward) - penalty, terminated, truncated, info
