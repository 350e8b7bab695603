"""TradingVecEnv: the batched env gives the transitions of N single TradingEnvs."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from stable_baselines3.common.vec_env import DummyVecEnv

from stocktrade.data.csv_bars import read_bars_csv
from stocktrade.errors import ValidationError
from stocktrade.quant.observation import ObservationSpec
from stocktrade.rl.env import EnvConfig, EnvData, TradingEnv, fit_observation_spec
from stocktrade.rl.vec_env import TradingVecEnv
from tests.conftest import data_file

SYMBOLS = ("AAPL", "MSFT", "JPM", "XOM")


@pytest.fixture(scope="module")
def datas() -> list[EnvData]:
    bars = read_bars_csv(data_file("daily_us_stocks_stocknet.csv"))
    chosen = [bars[s] for s in SYMBOLS]
    spec = fit_observation_spec(chosen, ObservationSpec(), end="2014-12-31")
    return [EnvData.from_bars(b, spec) for b in chosen]


def _dummy(datas: list[EnvData], config: EnvConfig, n: int) -> DummyVecEnv:
    return DummyVecEnv([partial(TradingEnv, datas[i % len(datas)], config) for i in range(n)])


def _assert_same_transitions(a: Any, b: Any, actions: list[np.ndarray], *, min_dones: int) -> None:
    np.testing.assert_array_equal(a.reset(), b.reset())
    dones_seen = 0
    for k, act in enumerate(actions):
        obs_a, rew_a, done_a, info_a = a.step(act)
        obs_b, rew_b, done_b, info_b = b.step(act)
        np.testing.assert_array_equal(obs_a, obs_b, err_msg=f"obs at step {k}")
        np.testing.assert_array_equal(rew_a, rew_b, err_msg=f"rewards at step {k}")
        np.testing.assert_array_equal(done_a, done_b, err_msg=f"dones at step {k}")
        assert rew_a.dtype == rew_b.dtype == np.float32
        for i in np.flatnonzero(done_b):
            dones_seen += 1
            np.testing.assert_array_equal(
                info_a[i]["terminal_observation"], info_b[i]["terminal_observation"]
            )
            assert info_a[i]["TimeLimit.truncated"] == info_b[i]["TimeLimit.truncated"]
            for key in ("equity", "fees", "trades", "t"):
                assert info_a[i][key] == info_b[i][key]
    assert dones_seen >= min_dones


def test_batched_env_equals_dummy_vec_env_of_single_envs(datas: list[EnvData]) -> None:
    config = EnvConfig(random_start=True, episode_length=25, allow_short=True)
    n = 10
    batched, dummy = TradingVecEnv(datas, config, n), _dummy(datas, config, n)
    batched.seed(11)
    dummy.seed(11)
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, 3, n) for _ in range(120)]
    _assert_same_transitions(batched, dummy, actions, min_dones=30)


def test_batched_env_equals_single_envs_for_box_actions_and_pnl_reward(
    datas: list[EnvData],
) -> None:
    config = EnvConfig(action_mode="target_box", reward="pnl", random_start=True, episode_length=40)
    n = 6
    batched, dummy = TradingVecEnv(datas, config, n), _dummy(datas, config, n)
    batched.seed(3)
    dummy.seed(3)
    rng = np.random.default_rng(1)
    actions = [rng.uniform(-1.2, 1.2, (n, 1)).astype(np.float32) for _ in range(90)]
    _assert_same_transitions(batched, dummy, actions, min_dones=6)


def test_episodes_run_to_the_end_of_the_data_without_random_start(
    datas: list[EnvData],
) -> None:
    config = EnvConfig()
    batched, dummy = TradingVecEnv(datas[:2], config), _dummy(datas[:2], config, 2)
    length = datas[0].last - datas[0].first
    actions = [np.array([k % 3, (k // 7) % 3]) for k in range(length + 5)]
    _assert_same_transitions(batched, dummy, actions, min_dones=2)


def test_several_envs_on_one_symbol_take_per_env_start_options(datas: list[EnvData]) -> None:
    venv = TradingVecEnv(datas, EnvConfig(episode_length=10), 3, assignment=[1, 1, 1])
    first = datas[1].first
    venv.set_options([{"start": first}, {"start": first + 5}, {"start": first + 9}])
    obs = venv.reset()
    rows = datas[1].obs_rows
    np.testing.assert_array_equal(obs, rows[[first, first + 5, first + 9]])
    assert venv.reset_infos[2] == {"t": first + 9}


def test_out_of_range_actions_are_rejected(datas: list[EnvData]) -> None:
    venv = TradingVecEnv(datas, EnvConfig(), 4)
    venv.reset()
    with pytest.raises(ValidationError, match=r"env 2: action in 0\.\.2 expected; found 3"):
        venv.step(np.array([0, 1, 3, 0]))
    with pytest.raises(ValidationError, match=r"shape \(4,\)"):
        venv.step(np.array([0, 1]))


def test_datas_with_different_observation_sizes_cannot_share_a_batch(
    datas: list[EnvData],
) -> None:
    bars = read_bars_csv(data_file("daily_us_stocks_stocknet.csv"))
    wide = fit_observation_spec([bars["AAPL"]], ObservationSpec(window=4), end="2014-12-31")
    other = EnvData.from_bars(bars["AAPL"], wide)
    with pytest.raises(ValidationError, match="obs_dim"):
        TradingVecEnv([datas[0], other])


def test_sb3_ppo_collects_rollouts_from_the_batched_env(datas: list[EnvData]) -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    venv = VecMonitor(TradingVecEnv(datas, EnvConfig(random_start=True, episode_length=16), 4))
    model = PPO(
        "MlpPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, seed=0,
        policy_kwargs={"net_arch": [16]}, device="cpu",
    )  # fmt: skip
    model.learn(64)
    assert model.num_timesteps == 64
    assert len(model.ep_info_buffer) >= 4
