"""ONNX export of trained policies: parity, reproducibility, manifest, backtest equivalence."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("onnxruntime")

from stable_baselines3 import PPO

from stocktrade.adapters.inference.onnx_runtime import OnnxPolicyRuntime
from stocktrade.data.arrays import BarArrays
from stocktrade.data.csv_bars import read_bars_csv
from stocktrade.errors import ValidationError
from stocktrade.quant.features import FeatureSpec
from stocktrade.quant.observation import ObservationSpec
from stocktrade.rl import export as export_mod
from stocktrade.rl.env import (
    EnvConfig,
    EnvData,
    TradingEnv,
    action_labels,
    fit_observation_spec,
)
from stocktrade.rl.export import (
    ExportParityError,
    check_parity,
    export_policy,
    sample_observations,
    save_sb3,
)
from stocktrade.rl.manifest import build_manifest, config_hash, verify_files
from stocktrade.rl.ppo import PPOConfig, build_ppo, make_vec_env, train
from tests.conftest import data_file

ENV = EnvConfig(random_start=True, episode_length=32, allow_short=True, commission_bps=5.0)
TINY = PPOConfig(
    total_timesteps=128, n_envs=2, n_steps=32, batch_size=32, n_epochs=2, net_arch=(16,), seed=3
)


@pytest.fixture(scope="module")
def bars() -> dict[str, BarArrays]:
    return read_bars_csv(data_file("daily_us_stocks_stocknet.csv"))


@pytest.fixture(scope="module")
def spec(bars: dict[str, BarArrays]) -> ObservationSpec:
    return fit_observation_spec([bars["AAPL"], bars["MSFT"]], ObservationSpec(), end="2014-12-31")


@pytest.fixture(scope="module")
def datas(bars: dict[str, BarArrays], spec: ObservationSpec) -> list[EnvData]:
    return [EnvData.from_bars(bars[s], spec, end="2014-12-31") for s in ("AAPL", "MSFT")]


@pytest.fixture(scope="module")
def observations(datas: list[EnvData]) -> np.ndarray:
    return sample_observations(TradingEnv(datas[0], ENV), 1000, seed=1)


def _trained(datas: list[EnvData], config: PPOConfig = TINY) -> PPO:
    model = build_ppo(make_vec_env(datas, ENV, config), config)
    return train(model, config.total_timesteps).model


@pytest.fixture(scope="module")
def model(datas: list[EnvData]) -> PPO:
    return _trained(datas)


def test_observations_for_parity_come_from_the_env_and_cover_every_position_state(
    observations: np.ndarray, datas: list[EnvData]
) -> None:
    assert observations.shape == (1000, datas[0].obs_dim)
    assert set(np.unique(observations[:, datas[0].pos_idx])) == {-1.0, 0.0, 1.0}


def test_export_follows_the_io_contract_and_matches_sb3_on_1000_observations(
    model: PPO, observations: np.ndarray, tmp_path: Path
) -> None:
    path = tmp_path / "policy.onnx"
    result = export_policy(model, observations, path=path)
    assert result.parity.ok and result.parity.n_obs == 1000
    assert result.parity.max_abs_logit_diff <= 1e-5
    assert path.read_bytes() == result.onnx
    runtime = OnnxPolicyRuntime(path)
    assert (runtime.obs_dim, runtime.n_actions) == (observations.shape[1], 3)
    sb3_actions, _ = model.predict(observations, deterministic=True)
    np.testing.assert_array_equal(runtime.act(observations), sb3_actions)
    _, probs = runtime.logits_probs(observations)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_an_export_that_computes_another_policy_fails_parity(
    model: PPO, datas: list[EnvData], observations: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = _trained(datas, TINY.model_copy(update={"seed": 99}))
    foreign = export_mod.export_onnx(other)
    report = check_parity(model, foreign, observations)
    assert not report.ok and report.max_abs_logit_diff > 1e-5
    monkeypatch.setattr(export_mod, "export_onnx", lambda m, path=None: foreign)
    with pytest.raises(ExportParityError, match="differs from the SB3 policy"):
        export_policy(model, observations)


def test_same_seed_and_data_give_the_same_exported_actions_across_two_runs(
    datas: list[EnvData], observations: np.ndarray
) -> None:
    runtimes = []
    for _ in range(2):
        result = export_policy(_trained(datas), observations)
        runtimes.append(OnnxPolicyRuntime(result.onnx))
    first, second = (r.logits_probs(observations)[0] for r in runtimes)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(runtimes[0].act(observations), runtimes[1].act(observations))


def test_box_action_policies_cannot_be_exported_to_the_discrete_contract(
    datas: list[EnvData],
) -> None:
    env = EnvConfig(action_mode="target_box")
    config = TINY.model_copy(update={"total_timesteps": 64})
    model = build_ppo(make_vec_env(datas, env, config), config)
    with pytest.raises(ValidationError, match="Discrete"):
        export_mod.export_onnx(model)


def test_manifest_stamps_data_specs_versions_and_file_hashes(
    model: PPO, spec: ObservationSpec, observations: np.ndarray
) -> None:
    onnx_bytes = export_policy(model, observations).onnx
    files = {"policy.onnx": onnx_bytes, "policy_sb3.zip": save_sb3(model)}
    kwargs = {
        "symbols": ["MSFT", "AAPL"],
        "timeframe": "1d",
        "start": "2012-09-04T00:00:00Z",
        "end": "2014-12-31T00:00:00Z",
        "seed": TINY.seed,
        "feature_spec": FeatureSpec().to_dict(),
        "observation_spec": spec.to_dict(),
        "env_config": ENV.model_dump(mode="json"),
        "train_config": TINY.model_dump(mode="json"),
        "files": files,
        "action_labels": action_labels(ENV),
    }
    manifest = build_manifest(**kwargs)  # type: ignore[arg-type]
    assert manifest["data"]["symbols"] == ["AAPL", "MSFT"]
    assert manifest["observation_spec"]["mean"] == list(spec.mean or ())
    assert manifest["action_labels"] == ["HOLD", "BUY", "SELL"]
    assert manifest["packages"]["torch"] != "not-installed"
    import hashlib

    assert manifest["files"]["policy.onnx"]["sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
    verify_files(manifest, files)
    with pytest.raises(ValidationError, match="sha256"):
        verify_files(manifest, {**files, "policy.onnx": onnx_bytes + b"x"})
    again = build_manifest(**kwargs)  # type: ignore[arg-type]
    assert again["config_hash"] == manifest["config_hash"]
    reseeded = build_manifest(**{**kwargs, "seed": 4})  # type: ignore[arg-type]
    assert reseeded["config_hash"] != manifest["config_hash"]
    assert config_hash({"b": 1, "a": [1, 2]}) == config_hash({"a": [1, 2], "b": 1})


def test_exported_policy_trades_the_same_in_the_env_and_the_backtest_engine(
    model: PPO, bars: dict[str, BarArrays], spec: ObservationSpec, observations: np.ndarray
) -> None:
    """Same policy, same bars, same costs: the env and run_backtest give one equity curve."""
    from stocktrade.backtest.config import BacktestConfig
    from stocktrade.backtest.engine import run_backtest
    from stocktrade.domain.risk import RiskLimits
    from stocktrade.strategies.onnx_policy import OnnxPolicyStrategy

    onnx_bytes = export_policy(model, observations).onnx
    aapl = bars["AAPL"]
    runtime = OnnxPolicyRuntime(onnx_bytes)
    env = TradingEnv(
        EnvData.from_bars(aapl, spec),
        ENV.model_copy(update={"random_start": False, "episode_length": None}),
    )
    obs, _ = env.reset(seed=0)
    env_equity = np.full(len(aapl), np.nan)
    done = False
    while not done:
        action, _ = runtime.act_one(obs)
        obs, _, terminated, truncated, _ = env.step(action)
        env_equity[env.t] = env.portfolio.equity
        done = terminated or truncated
    assert env.portfolio.trades >= 1

    strategy = OnnxPolicyStrategy(
        onnx_bytes, feature_spec=FeatureSpec(), obs_spec=spec, allow_short=ENV.allow_short
    )
    config = BacktestConfig(
        initial_cash=Decimal("100000"),
        costs=ENV.cost_model(),
        risk=RiskLimits(allow_short=ENV.allow_short),
        whole_shares=ENV.whole_shares,
    )
    book = run_backtest({"AAPL": aapl}, strategy, config).books["AAPL"]
    steps = np.flatnonzero(~np.isnan(env_equity))
    np.testing.assert_allclose(env_equity[steps], book.equity[steps], rtol=1e-12)
