"""A batched trading env: many symbols or start offsets stepped by one numba loop.

:class:`TradingVecEnv` implements stable-baselines3's ``VecEnv`` over the arrays of
:class:`~stocktrade.rl.env.EnvData`. Every env advances through
:func:`stocktrade.rl.env.advance`, the accounting :class:`~stocktrade.rl.env.TradingEnv`
uses, and draws episode starts with the same function and a per-env generator seeded like
gymnasium's, so N envs here give the same transitions as ``DummyVecEnv`` over N
``TradingEnv`` (same seeds, same actions): observations, float32 rewards, dones, and the
``terminal_observation`` / ``TimeLimit.truncated`` infos of auto-reset.

Symbols are packed once: prices into one ``[sum T, 4]`` array, observation rows into one
``[sum T, obs_dim]`` array, each env holding the offset of its symbol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from numba import njit
from numpy.typing import NDArray
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from stocktrade.errors import ValidationError
from stocktrade.rl.env import (
    NEEDS_RESET,
    RUNNING,
    S_EQUITY,
    S_FEES,
    S_POS,
    S_STATUS,
    S_T,
    S_TRADES,
    STATE_SIZE,
    TRUNCATED,
    EnvConfig,
    EnvData,
    _observation_space,
    advance,
    draw_start,
    reset_state,
)

__all__ = ["TradingVecEnv"]


@njit(nogil=True, error_model="numpy")
def _batch_step(
    states: NDArray[np.float64],
    targets: NDArray[np.float64],
    offs: NDArray[np.int64],
    px: NDArray[np.float64],
    rows: NDArray[np.float32],
    pos_idx: int,
    p: NDArray[np.float64],
    obs: NDArray[np.float32],
    rewards: NDArray[np.float32],
) -> int:
    done = 0
    dim = obs.shape[1]
    for i in range(states.shape[0]):
        st = states[i]
        off = offs[i]
        rewards[i] = advance(st, targets[i], px, off, p)
        row = off + np.int64(st[S_T])
        # An explicit loop: numba's slice assignment goes through a generic strided copy.
        for j in range(dim):
            obs[i, j] = rows[row, j]
        if pos_idx >= 0:
            obs[i, pos_idx] = st[S_POS]
        if st[S_STATUS] != RUNNING:
            done += 1
    return done


@njit(nogil=True, error_model="numpy")
def _discrete_targets(
    actions: NDArray[np.int64], table: NDArray[np.float64], out: NDArray[np.float64]
) -> int:
    n_actions = table.shape[0]
    for i in range(actions.shape[0]):
        a = actions[i]
        if a < 0 or a >= n_actions:
            return i
        out[i] = table[a]
    return -1


class TradingVecEnv(VecEnv):
    """``n_envs`` trading envs over one or more symbols, stepped in one numba call.

    Args:
        datas: the symbols' :class:`EnvData`; all must share ``obs_dim``.
        config: env settings, shared by every env.
        n_envs: number of envs; defaults to ``len(datas)``.
        assignment: which data each env trades (indices into ``datas``); defaults to
            ``i % len(datas)``. Several envs on one symbol with ``random_start`` (or
            per-env ``set_options({"start": i})``) sample different start offsets.

    Raises:
        ValidationError: the datas disagree on ``obs_dim`` or an assignment is out of range.
    """

    def __init__(
        self,
        datas: Sequence[EnvData],
        config: EnvConfig | None = None,
        n_envs: int | None = None,
        *,
        assignment: Sequence[int] | None = None,
    ) -> None:
        if not datas:
            raise ValidationError("TradingVecEnv needs at least one EnvData; found none")
        dims = {d.obs_dim for d in datas}
        if len(dims) != 1:
            raise ValidationError(f"every EnvData must share obs_dim; found {sorted(dims)}")
        pos = {d.pos_idx for d in datas}
        if len(pos) != 1:
            raise ValidationError(f"every EnvData must share the position slot; found {pos}")
        self.config = config if config is not None else EnvConfig()
        n = len(datas) if n_envs is None else int(n_envs)
        assign = [i % len(datas) for i in range(n)] if assignment is None else list(assignment)
        if len(assign) != n or any(not 0 <= a < len(datas) for a in assign):
            raise ValidationError(
                f"assignment of {n} indices in [0, {len(datas)}) expected; found {assign}"
            )
        self.datas = list(datas)
        self.assignment = assign
        starts = np.cumsum([0] + [d.n_bars for d in datas])
        self._px = np.ascontiguousarray(np.concatenate([d.px for d in datas], axis=0))
        self._rows = np.ascontiguousarray(np.concatenate([d.obs_rows for d in datas], axis=0))
        self._offs = np.array([starts[a] for a in assign], dtype=np.int64)
        self._pos_idx = datas[0].pos_idx
        self._dim = datas[0].obs_dim
        self._p = self.config.params()
        self._table = self.config.target_table()
        self._is_box = self.config.action_mode == "target_box"
        self._states = np.zeros((n, STATE_SIZE), dtype=np.float64)
        self._states[:, S_STATUS] = NEEDS_RESET
        self._targets = np.empty(n, dtype=np.float64)
        self._rngs: list[np.random.Generator | None] = [None] * n
        self._actions: NDArray[Any] | None = None
        super().__init__(n, _observation_space(datas[0].obs_spec), self.config.action_space())

    # ------------------------------------------------------------------ VecEnv API

    def reset(self) -> VecEnvObs:
        """Reset every env, honouring seeds from ``seed()`` and options from ``set_options()``."""
        obs = np.empty((self.num_envs, self._dim), dtype=np.float32)
        for i in range(self.num_envs):
            seed = self._seeds[i]
            if seed is not None:
                self._rngs[i] = seeding.np_random(seed)[0]
            self._reset_one(i, obs, self._options[i])
        self._reset_seeds()
        self._reset_options()
        return obs

    def _rng(self, i: int) -> np.random.Generator:
        rng = self._rngs[i]
        if rng is None:
            rng = self._rngs[i] = seeding.np_random()[0]
        return rng

    def _reset_one(self, i: int, obs: NDArray[np.float32], options: dict[str, Any]) -> None:
        data = self.datas[self.assignment[i]]
        if options and "start" in options:
            start = int(options["start"])
            if not data.first <= start < data.last:
                raise ValidationError(
                    f"env {i}: start in [{data.first}, {data.last}) expected; found {start}"
                )
            length = self.config.episode_length
            end = data.last if length is None else min(start + length, data.last)
        else:
            start, end = draw_start(self._rng(i), data, self.config)
        reset_state(self._states[i], start, end, self.config.initial_cash)
        obs[i] = self._rows[self._offs[i] + start]
        self.reset_infos[i] = {"t": start}

    def step_async(self, actions: NDArray[Any]) -> None:
        """Store the actions for :meth:`step_wait`."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step every env once; finished envs are reset and report their terminal obs."""
        actions = self._actions
        if actions is None:
            raise ValidationError("step_wait() called without step_async(actions)")
        self._actions = None
        self._fill_targets(actions)
        n = self.num_envs
        obs = np.empty((n, self._dim), dtype=np.float32)
        rewards = np.empty(n, dtype=np.float32)
        n_done = _batch_step(
            self._states,
            self._targets,
            self._offs,
            self._px,
            self._rows,
            self._pos_idx,
            self._p,
            obs,
            rewards,
        )
        infos: list[dict[str, Any]] = [{} for _ in range(n)]
        if n_done == 0:
            return obs, rewards, np.zeros(n, dtype=bool), infos
        status = self._states[:, S_STATUS]
        dones = status != RUNNING
        for i in np.flatnonzero(dones):
            st = self._states[i]
            info = infos[i]
            info["equity"] = float(st[S_EQUITY])
            info["fees"] = float(st[S_FEES])
            info["trades"] = int(st[S_TRADES])
            info["t"] = int(st[S_T])
            info["TimeLimit.truncated"] = bool(st[S_STATUS] == TRUNCATED)
            info["terminal_observation"] = obs[i].copy()
            self._reset_one(int(i), obs, {})
        return obs, rewards, dones, infos

    def _fill_targets(self, actions: NDArray[Any]) -> None:
        arr = np.asarray(actions)
        n = self.num_envs
        if self._is_box:
            flat = arr.astype(np.float64, copy=False).reshape(-1)
            if flat.shape != (n,):
                raise ValidationError(f"actions of shape ({n}, 1) expected; found {arr.shape}")
            low, high = self.config.box_bounds()
            a = np.clip(flat, -1.0, 1.0)
            np.multiply(a + 1.0, 0.5 * (high - low), out=self._targets)
            self._targets += low
            return
        ints = arr.reshape(-1)
        if ints.shape != (n,):
            raise ValidationError(f"actions of shape ({n},) expected; found {arr.shape}")
        if ints.dtype != np.int64:
            ints = ints.astype(np.int64)
        bad = _discrete_targets(ints, self._table, self._targets)
        if bad >= 0:
            raise ValidationError(
                f"env {bad}: action in 0..{len(self._table) - 1} expected; found {ints[bad]}"
            )

    def close(self) -> None:
        """Nothing to release (no subprocesses, no files)."""

    # ------------------------------------------------------------------ attributes

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Per-env attributes: ``data``, ``config``, ``render_mode`` (None), ``portfolio``."""
        idx = self._get_indices(indices)
        if attr_name == "render_mode":
            return [None for _ in idx]
        if attr_name == "data":
            return [self.datas[self.assignment[i]] for i in idx]
        if attr_name == "config":
            return [self.config for _ in idx]
        if attr_name == "state":
            return [self._states[i].copy() for i in idx]
        raise AttributeError(f"TradingVecEnv envs have no attribute {attr_name!r}")

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Envs share packed arrays; their attributes are read-only."""
        raise AttributeError(f"TradingVecEnv cannot set {attr_name!r}: env attributes are fixed")

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        """No per-env methods exist (the envs are rows of one array)."""
        raise AttributeError(f"TradingVecEnv envs have no method {method_name!r}")

    def env_is_wrapped(self, wrapper_class: type[Any], indices: VecEnvIndices = None) -> list[bool]:
        """Rows of a batch are never wrapped individually."""
        return [False for _ in self._get_indices(indices)]

    def _get_indices(self, indices: VecEnvIndices) -> list[int]:
        n = getattr(self, "num_envs", None)
        if n is None:  # called by VecEnv.__init__ before num_envs is set
            n = self._states.shape[0]
        if indices is None:
            return list(range(n))
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    # ------------------------------------------------------------------ inspection

    @property
    def states(self) -> NDArray[np.float64]:
        """A copy of the ``[n_envs, STATE_SIZE]`` state rows (``S_*`` layout of env.py)."""
        return self._states.copy()

    @property
    def equity(self) -> NDArray[np.float64]:
        """Current equity of every env."""
        return self._states[:, S_EQUITY].copy()
