"""PPO training smoke tests: tiny budgets, real env, real SB3 and TensorBoard files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("torch")

from stocktrade.data.csv_bars import read_bars_csv
from stocktrade.quant.observation import ObservationSpec
from stocktrade.rl.callbacks import Progress
from stocktrade.rl.env import EnvConfig, EnvData, action_labels, fit_observation_spec
from stocktrade.rl.ppo import PPOConfig, build_ppo, make_vec_env, train
from tests.conftest import data_file

ENV = EnvConfig(random_start=True, episode_length=16)
TINY = PPOConfig(
    total_timesteps=64, n_envs=2, n_steps=16, batch_size=16, n_epochs=2, net_arch=(16,), seed=7
)


@pytest.fixture(scope="module")
def datas() -> list[EnvData]:
    bars = read_bars_csv(data_file("daily_us_stocks_stocknet.csv"))
    chosen = [bars["AAPL"], bars["MSFT"]]
    spec = fit_observation_spec(chosen, ObservationSpec(), end="2014-12-31")
    return [EnvData.from_bars(b, spec, end="2014-12-31") for b in chosen]


def _scalars(logdir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for run in logdir.iterdir():
        acc = EventAccumulator(str(run))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"]) | {f"hist:{t}" for t in acc.Tags()["histograms"]}
    return tags


def test_ppo_trains_64_steps_and_writes_tensorboard_scalars(
    datas: list[EnvData], tmp_path: Path
) -> None:
    model = build_ppo(make_vec_env(datas, ENV, TINY), TINY, tensorboard_dir=tmp_path)
    result = train(model, TINY.total_timesteps, labels=action_labels(ENV))
    assert result.timesteps == 64 and not result.cancelled
    tags = _scalars(tmp_path)
    expected = {
        "rollout/step_reward_mean",
        "rollout/ep_rew_mean",
        "train/entropy_loss",
        "train/value_loss",
        "train/policy_gradient_loss",
        "train/grad_norm_mean",
        "train/grad_norm_max",
        "actions/frac_BUY",
        "hist:actions/histogram",
    }
    assert expected <= tags, expected - tags


def test_progress_hook_reports_percent_eta_and_latest_reward(datas: list[EnvData]) -> None:
    reports: list[Progress] = []
    model = build_ppo(make_vec_env(datas, ENV, TINY), TINY)
    result = train(model, TINY.total_timesteps, on_progress=reports.append)
    assert [round(r.percent) for r in reports] == [50, 100, 100]
    assert reports[-1].timesteps == 64 and reports[-1].eta_seconds == 0.0
    assert reports[0].eta_seconds is not None and reports[0].eta_seconds > 0
    assert all(r.latest_reward is not None and np.isfinite(r.latest_reward) for r in reports)
    assert result.last_progress == reports[-1]


def test_a_failing_progress_hook_does_not_stop_training(datas: list[EnvData]) -> None:
    def broken(_: Progress) -> None:
        raise OSError("database is down")

    model = build_ppo(make_vec_env(datas, ENV, TINY), TINY)
    assert train(model, TINY.total_timesteps, on_progress=broken).timesteps == 64


def test_cancellation_hook_stops_training_after_the_current_rollout(
    datas: list[EnvData],
) -> None:
    calls: list[int] = []

    def cancel() -> bool:
        calls.append(1)
        return True

    config = TINY.model_copy(update={"total_timesteps": 320})
    model = build_ppo(make_vec_env(datas, ENV, config), config)
    result = train(model, config.total_timesteps, should_cancel=cancel)
    assert result.cancelled
    assert result.timesteps < 320
    assert len(calls) == 1


def test_dummy_vec_env_of_single_envs_trains_too(datas: list[EnvData]) -> None:
    config = TINY.model_copy(update={"vec_env": "dummy"})
    model = build_ppo(make_vec_env(datas, ENV, config), config)
    assert train(model, config.total_timesteps).timesteps == 64


def test_ppo_config_rejects_unknown_fields_and_oversized_batches() -> None:
    with pytest.raises(ValueError, match="extra"):
        PPOConfig(learning_rat=1e-3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="batch_size must be <= n_steps"):
        PPOConfig(n_envs=1, n_steps=8, batch_size=16)


def test_build_ppo_pins_torch_threads_and_net_arch(datas: list[EnvData]) -> None:
    import torch

    config = TINY.model_copy(update={"torch_threads": 1, "net_arch": (16, 8)})
    model = build_ppo(make_vec_env(datas, ENV, config), config)
    assert torch.get_num_threads() == 1
    sizes = [
        m.out_features for m in model.policy.mlp_extractor.policy_net if hasattr(m, "out_features")
    ]
    assert sizes == [16, 8]
