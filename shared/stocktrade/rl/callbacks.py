"""Training callbacks: TensorBoard scalars, progress reports and cancellation.

* :class:`TrainingMetricsCallback` adds to SB3's own TensorBoard scalars (losses, entropy,
  KL, clip fraction, explained variance): rollout reward, episode reward, gradient norms
  (before clipping) and an action histogram.
* :class:`ProgressCallback` calls a hook with percent done, ETA and the latest reward at
  each rollout end (the training job writes it to its ``runs`` row).
* :class:`CancellationCallback` asks a callable at each rollout end whether to stop; once
  it says yes, training stops at the next environment step (the rollout already collected
  still gets its one gradient update, as SB3 offers no earlier exit).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from stocktrade.logging import get_logger

__all__ = [
    "CancellationCallback",
    "Progress",
    "ProgressCallback",
    "TrainingMetricsCallback",
]

log = get_logger(__name__)


@dataclass(frozen=True)
class Progress:
    """A progress report.

    Attributes:
        timesteps: env steps done.
        total_timesteps: env steps planned.
        percent: 0..100.
        eta_seconds: estimated seconds left (None before the first rollout completes).
        fps: env steps per second so far.
        latest_reward: mean reward of the last 100 finished episodes, else of the rollout.
        elapsed_seconds: wall time since training started.
    """

    timesteps: int
    total_timesteps: int
    percent: float
    eta_seconds: float | None
    fps: float
    latest_reward: float | None
    elapsed_seconds: float


def _latest_reward(model: Any) -> float | None:
    episodes = getattr(model, "ep_info_buffer", None)
    if episodes:
        return float(np.mean([e["r"] for e in episodes]))
    buffer = getattr(model, "rollout_buffer", None)
    if buffer is not None and getattr(buffer, "full", False):
        return float(np.mean(buffer.rewards))
    return None


class ProgressCallback(BaseCallback):
    """Reports progress through ``on_progress`` at each rollout end.

    Args:
        on_progress: called with a :class:`Progress`; exceptions are logged, never raised
            (a failed progress write must not kill a training run).
        total_timesteps: the planned budget (``learn(total_timesteps=...)``).
        min_interval_s: skip reports closer than this to the previous one (the final
            report at training end is always sent).
    """

    def __init__(
        self,
        on_progress: Callable[[Progress], None],
        total_timesteps: int,
        min_interval_s: float = 0.0,
    ) -> None:
        super().__init__()
        self._hook = on_progress
        self._total = max(1, int(total_timesteps))
        self._min_interval = float(min_interval_s)
        self._start = 0.0
        self._start_steps = 0
        self._last_sent = -math.inf
        self.last: Progress | None = None

    def _on_training_start(self) -> None:
        self._start = time.monotonic()
        self._start_steps = self.num_timesteps

    def _on_step(self) -> bool:
        return True

    def _report(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_sent < self._min_interval:
            return
        done = self.num_timesteps
        elapsed = now - self._start
        steps = done - self._start_steps
        fps = steps / elapsed if elapsed > 0 else 0.0
        left = max(0, self._total - done)
        eta = left / fps if fps > 0 else None
        progress = Progress(
            timesteps=done,
            total_timesteps=self._total,
            percent=min(100.0, 100.0 * done / self._total),
            eta_seconds=eta,
            fps=fps,
            latest_reward=_latest_reward(self.model),
            elapsed_seconds=elapsed,
        )
        self.last = progress
        self._last_sent = now
        try:
            self._hook(progress)
        except Exception:  # the hook is the caller's I/O; training outlives its failures
            log.exception("progress hook failed", extra={"timesteps": done})

    def _on_rollout_end(self) -> None:
        self._report(force=False)

    def _on_training_end(self) -> None:
        self._report(force=True)


class CancellationCallback(BaseCallback):
    """Stops training once ``should_cancel()`` returns True (checked at rollout ends).

    Args:
        should_cancel: a cheap callable (the job reads ``runs.cancel_requested``); its
            exceptions are logged and treated as "not cancelled".
    """

    def __init__(self, should_cancel: Callable[[], bool]) -> None:
        super().__init__()
        self._should_cancel = should_cancel
        self.cancelled = False

    def _on_rollout_end(self) -> None:
        if self.cancelled:
            return
        try:
            self.cancelled = bool(self._should_cancel())
        except Exception:
            log.exception("cancellation check failed; training continues")
            return
        if self.cancelled:
            log.info("training cancelled", extra={"timesteps": self.num_timesteps})

    def _on_step(self) -> bool:
        return not self.cancelled


class TrainingMetricsCallback(BaseCallback):
    """TensorBoard scalars beyond SB3's own: rewards, gradient norms, action histogram.

    Gradient norms are measured before SB3 clips them: a hook on every policy parameter
    accumulates the squared gradient norm during ``backward()``, and an optimizer pre-step
    hook closes each minibatch. ``train/grad_norm_mean`` and ``train/grad_norm_max`` cover
    the last ``train()`` call and are logged with the next dump, next to SB3's
    ``train/*`` losses from the same update.

    Args:
        action_labels: names of discrete actions, for ``actions/frac_<label>`` scalars.
    """

    def __init__(self, action_labels: list[str] | None = None) -> None:
        super().__init__()
        self._labels = list(action_labels or [])
        self._sq = 0.0
        self._norms: list[float] = []
        self._handles: list[Any] = []

    def _on_training_start(self) -> None:
        policy = self.model.policy
        for param in policy.parameters():
            if param.requires_grad:
                self._handles.append(param.register_post_accumulate_grad_hook(self._accumulate))
        self._handles.append(policy.optimizer.register_step_pre_hook(self._close_minibatch))

    def _accumulate(self, param: torch.Tensor) -> None:
        if param.grad is not None:
            self._sq += float(param.grad.detach().pow(2).sum())

    def _close_minibatch(self, *_: Any) -> None:
        self._norms.append(math.sqrt(self._sq))
        self._sq = 0.0

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buffer = cast(OnPolicyAlgorithm, self.model).rollout_buffer
        self.logger.record("rollout/step_reward_mean", float(np.mean(buffer.rewards)))
        self.logger.record("rollout/step_reward_std", float(np.std(buffer.rewards)))
        if self.model.ep_info_buffer:
            rewards = [e["r"] for e in self.model.ep_info_buffer]
            self.logger.record("rollout/episode_reward_last", float(rewards[-1]))
        actions = np.asarray(buffer.actions)
        if self._labels and actions.size:
            flat = actions.reshape(-1).astype(np.int64)
            counts = np.bincount(flat, minlength=len(self._labels))
            fractions = counts / max(1, flat.size)
            for label, frac in zip(self._labels, fractions, strict=False):
                self.logger.record(f"actions/frac_{label}", float(frac))
            # SB3's TensorBoard writer turns a tensor into a histogram; other writers skip it.
            self.logger.record(
                "actions/histogram", torch.as_tensor(flat), exclude=("stdout", "log", "csv", "json")
            )
        elif actions.size:
            self.logger.record(
                "actions/histogram",
                torch.as_tensor(actions.reshape(-1)),
                exclude=("stdout", "log", "csv", "json"),
            )
        if self._norms:
            self.logger.record("train/grad_norm_mean", float(np.mean(self._norms)))
            self.logger.record("train/grad_norm_max", float(np.max(self._norms)))
            self._norms = []

    def _on_training_end(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
