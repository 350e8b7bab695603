"""TradingEnv: env contract, observations, accounting shared with the backtest, rewards."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from dataclasses import replace

import numpy as np
import pytest

from stocktrade.data.arrays import BarArrays
from stocktrade.data.csv_bars import read_bars_csv
from stocktrade.domain.actions import POSITION_STATES, Action, position_state
from stocktrade.domain.costs import CostModel
from stocktrade.errors import ConflictError, ValidationError
from stocktrade.quant.features import FeatureSpec, compute_features
from stocktrade.quant.observation import (
    ObservationSpec,
    normalise,
    observation_at,
    observations_batch,
)
from stocktrade.rl.env import EnvConfig, EnvData, TradingEnv, fit_observation_spec
from stocktrade.sim.kernels import execute_target
from tests.conftest import data_file

TRAIN_END = "2014-12-31"


@pytest.fixture(scope="module")
def bars() -> dict[str, BarArrays]:
    return read_bars_csv(data_file("daily_us_stocks_stocknet.csv"))


@pytest.fixture(scope="module")
def spec(bars: dict[str, BarArrays]) -> ObservationSpec:
    return fit_observation_spec([bars["AAPL"], bars["MSFT"]], ObservationSpec(), end=TRAIN_END)


@pytest.fixture(scope="module")
def aapl(bars: dict[str, BarArrays], spec: ObservationSpec) -> EnvData:
    return EnvData.from_bars(bars["AAPL"], spec)


def _run(env: TradingEnv, actions: list[int], seed: int = 0) -> list[tuple]:
    obs, _ = env.reset(seed=seed)
    out = [(obs, 0.0, False, False)]
    for a in actions:
        obs, r, term, trunc, _ = env.step(a)
        out.append((obs, r, term, trunc))
        if term or trunc:
            break
    return out


# ------------------------------------------------------------------ env contract


@pytest.mark.parametrize(
    "config",
    [
        EnvConfig(),
        EnvConfig(action_mode="target_levels", random_start=True, episode_length=50),
        EnvConfig(action_mode="target_box", allow_short=True, reward="risk_adjusted"),
    ],
    ids=["discrete", "levels", "box"],
)
def test_env_passes_the_gymnasium_and_sb3_env_checkers(aapl: EnvData, config: EnvConfig) -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    with warnings.catch_warnings():
        # Only "no spec to test render modes" is expected (envs are built, not registered).
        warnings.filterwarnings("ignore", message=".*render modes.*")
        warnings.simplefilter("error")
        check_env(TradingEnv(aapl, config), skip_render_check=True)
        sb3_check_env(TradingEnv(aapl, config), warn=True)


def test_discrete_actions_are_hold_buy_sell(aapl: EnvData) -> None:
    env = TradingEnv(aapl)
    assert env.action_space.n == 3
    assert [int(a) for a in (Action.HOLD, Action.BUY, Action.SELL)] == [0, 1, 2]
    assert env.observation_space.shape == (aapl.obs_spec.obs_dim,)


def test_reset_with_the_same_seed_repeats_the_random_start(aapl: EnvData) -> None:
    env = TradingEnv(aapl, EnvConfig(random_start=True, episode_length=20))
    starts = [env.reset(seed=s)[1]["t"] for s in (3, 3, 4)]
    assert starts[0] == starts[1]
    again = [env.reset(seed=9)[1]["t"]] + [env.reset()[1]["t"] for _ in range(5)]
    other = TradingEnv(aapl, EnvConfig(random_start=True, episode_length=20))
    replay = [other.reset(seed=9)[1]["t"]] + [other.reset()[1]["t"] for _ in range(5)]
    assert again == replay
    assert len(set(again)) > 1


def test_episode_starts_after_feature_warm_up_and_observation_window(aapl: EnvData) -> None:
    env = TradingEnv(aapl)
    _, info = env.reset(seed=0)
    assert info["t"] == aapl.first == FeatureSpec().warmup + aapl.obs_spec.window - 1


def test_episodes_stay_inside_the_requested_date_range(
    bars: dict[str, BarArrays], spec: ObservationSpec
) -> None:
    data = EnvData.from_bars(bars["AAPL"], spec, start="2015-01-02", end="2015-06-30")
    assert str(data.ts[data.first])[:10] == "2015-01-02"
    assert str(data.ts[data.last])[:10] == "2015-06-30"
    env = TradingEnv(data, EnvConfig(random_start=True, episode_length=30))
    for seed in range(20):
        _, info = env.reset(seed=seed)
        assert data.first <= info["t"] <= data.last - 30


def test_a_range_without_two_usable_bars_is_rejected(
    bars: dict[str, BarArrays], spec: ObservationSpec
) -> None:
    with pytest.raises(ValidationError, match="needs >= 2 bars"):
        EnvData.from_bars(bars["AAPL"], spec, end="2012-10-01")


def test_an_unfitted_observation_spec_is_rejected(bars: dict[str, BarArrays]) -> None:
    with pytest.raises(ValidationError, match="fitted"):
        EnvData.from_bars(bars["AAPL"], ObservationSpec())


def test_env_config_rejects_unknown_fields_and_bad_levels() -> None:
    with pytest.raises(ValueError, match="extra"):
        EnvConfig(comission_bps=1.0)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="target_levels"):
        EnvConfig(action_mode="target_levels", target_levels=(-1.0, 1.0))


def test_stepping_a_finished_episode_raises_until_reset(aapl: EnvData) -> None:
    env = TradingEnv(aapl, EnvConfig(episode_length=2))
    with pytest.raises(ConflictError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    env.step(0)
    *_, truncated, info = env.step(0)
    assert truncated and info["equity"] == pytest.approx(100_000.0)
    with pytest.raises(ConflictError, match="reset"):
        env.step(0)


def test_invalid_actions_are_rejected_with_the_range(aapl: EnvData) -> None:
    env = TradingEnv(aapl)
    env.reset(seed=0)
    with pytest.raises(ValidationError, match=r"0\.\.2"):
        env.step(3)
    with pytest.raises(ValidationError, match=r"0\.\.2"):
        env.step(-1)


# ------------------------------------------------------------------ observations


def test_observations_equal_quant_observation_at_with_the_position_state(
    bars: dict[str, BarArrays], aapl: EnvData, spec: ObservationSpec
) -> None:
    b = bars["AAPL"]
    norm = normalise(compute_features(b.open, b.high, b.low, b.close, b.volume), spec)
    env = TradingEnv(aapl, EnvConfig(allow_short=True))
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(1)
    states = set()
    for _ in range(300):
        pf = env.portfolio
        state = position_state(pf.qty)
        states.add(state)
        np.testing.assert_array_equal(obs, observation_at(norm, pf.t, float(state)))
        obs, _, term, trunc, _ = env.step(int(rng.integers(3)))
        if term or trunc:
            break
    assert states == {-1, 0, 1}


def test_observation_at_step_t_ignores_bars_after_t(
    bars: dict[str, BarArrays], spec: ObservationSpec
) -> None:
    b = bars["AAPL"]
    cut = 400
    rng = np.random.default_rng(2)
    shock, vol_shock = np.ones(len(b)), np.ones(len(b))
    shock[cut + 1 :] = rng.uniform(0.5, 1.5, len(b) - cut - 1)
    vol_shock[cut + 1 :] = rng.uniform(0.1, 3.0, len(b) - cut - 1)
    changed = replace(
        b,
        open=b.open * shock,
        high=b.high * shock,
        low=b.low * shock,
        close=b.close * shock,
        volume=b.volume * vol_shock,
    )
    actions = [int(a) for a in rng.integers(0, 3, 1000)]
    runs = [_run(TradingEnv(EnvData.from_bars(x, spec)), actions) for x in (b, changed)]
    first = EnvData.from_bars(b, spec).first
    n_same = cut - first  # observations at bars first..cut
    for k in range(n_same + 1):
        np.testing.assert_array_equal(runs[0][k][0], runs[1][k][0])
    assert not np.array_equal(runs[0][n_same + 2][0], runs[1][n_same + 2][0])


# ------------------------------------------------------------------ accounting


def test_a_buy_fills_at_the_next_open_through_execute_target(aapl: EnvData) -> None:
    config = EnvConfig(commission_bps=10.0, slippage_bps=5.0, slippage_range_frac=0.1)
    env = TradingEnv(aapl, config)
    env.reset(seed=0)
    t = env.t
    o, h, lo, c = aapl.px[t + 1]
    cash, qty, _, fee, _ = execute_target(
        100_000.0, 0.0, 1.0, o, h, lo, 10.0, 0.0, 5.0, 0.1, True, False
    )
    _, reward, *_ = env.step(Action.BUY)
    pf = env.portfolio
    assert (pf.cash, pf.qty, pf.fees, pf.trades) == (cash, qty, fee, 1)
    assert pf.equity == cash + qty * c
    assert reward == pytest.approx(math.log(pf.equity / 100_000.0), abs=1e-15)


def test_close_fill_rule_fills_at_the_decision_bar_close(aapl: EnvData) -> None:
    env = TradingEnv(aapl, EnvConfig(fill_rule="close"))
    env.reset(seed=0)
    t = env.t
    _, h, lo, c = aapl.px[t]
    cash, qty, *_ = execute_target(100_000.0, 0.0, 1.0, c, h, lo, 1.0, 0.0, 2.0, 0.0, True, False)
    env.step(Action.BUY)
    assert (env.portfolio.cash, env.portfolio.qty) == (cash, qty)


def test_hold_and_repeated_buys_place_no_further_orders(aapl: EnvData) -> None:
    env = TradingEnv(aapl)
    env.reset(seed=0)
    env.step(Action.HOLD)
    assert env.portfolio.trades == 0
    env.step(Action.BUY)
    qty = env.portfolio.qty
    for a in (Action.BUY, Action.HOLD, Action.BUY):
        env.step(a)
    assert env.portfolio.trades == 1 and env.portfolio.qty == qty
    env.step(Action.SELL)
    assert env.portfolio.qty == 0 and env.portfolio.trades == 2


def test_target_levels_and_box_actions_map_onto_targets(aapl: EnvData) -> None:
    env = TradingEnv(aapl, EnvConfig(action_mode="target_levels", target_levels=(0.0, 0.5, 1.0)))
    env.reset(seed=0)
    env.step(1)
    assert env.portfolio.target == 0.5
    box = TradingEnv(aapl, EnvConfig(action_mode="target_box", allow_short=True))
    box.reset(seed=0)
    box.step(np.array([-0.5], np.float32))
    assert box.portfolio.target == -0.5 and box.portfolio.qty < 0
    long_only = TradingEnv(aapl, EnvConfig(action_mode="target_box"))
    long_only.reset(seed=0)
    long_only.step(np.array([0.0], np.float32))
    assert long_only.portfolio.target == 0.5


@pytest.mark.parametrize("reward", ["pnl", "log_return", "risk_adjusted"])
def test_rewards_are_the_portfolio_change_net_of_costs(aapl: EnvData, reward: str) -> None:
    env = TradingEnv(aapl, EnvConfig(reward=reward, commission_bps=20.0, risk_aversion=3.0))
    env.reset(seed=0)
    rng = np.random.default_rng(3)
    before = env.portfolio.equity
    for _ in range(100):
        _, r, *_ = env.step(int(rng.integers(3)))
        after = env.portfolio.equity
        log_r = math.log(after / before)
        expected = {
            "pnl": (after - before) / 100_000.0,
            "log_return": log_r,
            "risk_adjusted": log_r - 3.0 * log_r * log_r,
        }[reward]
        assert r == pytest.approx(expected, rel=1e-12, abs=1e-15)
        before = after
    assert env.portfolio.fees > 0


def test_losing_the_bankrupt_fraction_terminates_the_episode(aapl: EnvData) -> None:
    env = TradingEnv(aapl, EnvConfig(commission_bps=500.0, bankrupt_frac=0.5))
    env.reset(seed=0)
    for k in range(1000):
        _, _, terminated, truncated, info = env.step(Action.BUY if k % 2 == 0 else Action.SELL)
        if terminated or truncated:
            break
    assert terminated and not truncated
    assert info["equity"] <= 50_000.0


class _LinearPolicy:
    """A fixed linear policy as a backtest strategy (the engine's batched-policy path)."""

    name = "linear_policy"

    def __init__(self, weights: np.ndarray, spec: ObservationSpec, config: EnvConfig) -> None:
        self.weights = weights
        self.spec = spec
        self.action_table = tuple(config.target_table())
        self.warmup = FeatureSpec().warmup + spec.window - 1

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.argmax(obs @ self.weights, axis=-1)

    def params(self) -> dict[str, object]:
        return {}

    def reset(self) -> None:
        pass

    def on_bar(self, bar: object, position: object) -> object:
        raise AssertionError("the engine should take the batched path")

    def batch_actions(self, bars: BarArrays) -> np.ndarray:
        feats = compute_features(bars.open, bars.high, bars.low, bars.close, bars.volume)
        norm = normalise(feats, self.spec)
        n = len(bars)
        out = np.full((n, 3), -1, dtype=np.int64)
        idx = np.arange(self.warmup, n)
        for j, state in enumerate(POSITION_STATES):
            out[idx, j] = self.act(observations_batch(norm, idx, float(state)))
        return out


def test_env_equity_matches_the_backtest_engine_for_the_same_policy(
    bars: dict[str, BarArrays], aapl: EnvData, spec: ObservationSpec
) -> None:
    """A policy acting in the env ends each bar with the equity the backtest computes."""
    from stocktrade.backtest.config import BacktestConfig
    from stocktrade.backtest.engine import run_backtest
    from stocktrade.domain.risk import RiskLimits

    costs = CostModel.from_dict(
        {"commission_bps": 10, "slippage_bps": 3, "slippage_range_frac": "0.05"}
    )
    config = EnvConfig.with_costs(costs, allow_short=True)
    policy = _LinearPolicy(np.random.default_rng(4).normal(size=(aapl.obs_dim, 3)), spec, config)

    env = TradingEnv(aapl, config)
    obs, _ = env.reset(seed=0)
    env_equity = np.full(aapl.n_bars, np.nan)
    done = False
    while not done:
        obs, _, terminated, truncated, _ = env.step(int(policy.act(obs)))
        env_equity[env.t] = env.portfolio.equity
        done = terminated or truncated
    assert env.portfolio.trades > 10

    backtest = BacktestConfig(
        costs=costs, risk=RiskLimits(allow_short=True), whole_shares=config.whole_shares
    )
    result = run_backtest({"AAPL": bars["AAPL"]}, policy, backtest)  # type: ignore[arg-type]
    assert result.path == "policy_batch"
    book = result.books["AAPL"]
    steps = np.flatnonzero(~np.isnan(env_equity))
    np.testing.assert_array_equal(env_equity[steps], book.equity[steps])
    assert len(book.fills) == env.portfolio.trades


def test_the_env_and_the_rl_package_import_without_torch() -> None:
    code = (
        "import sys, stocktrade.rl, stocktrade.rl.env, stocktrade.rl.manifest;"
        "from stocktrade.rl import TradingEnv, EnvConfig;"
        "print(sorted(m for m in ('torch', 'stable_baselines3', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ wrappers


def test_reward_wrappers_reshape_rewards_but_not_observations(aapl: EnvData) -> None:
    from stocktrade.rl.wrappers import DifferentialSharpeReward, DrawdownPenalty, ScaleReward

    actions = [int(a) for a in np.random.default_rng(5).integers(0, 3, 200)]
    base = _run(TradingEnv(aapl), actions)
    scaled = _run(ScaleReward(TradingEnv(aapl), 100.0), actions)  # type: ignore[arg-type]
    sharpe = _run(DifferentialSharpeReward(TradingEnv(aapl), eta=0.05), actions)  # type: ignore[arg-type]
    penalised = _run(DrawdownPenalty(TradingEnv(aapl), coef=2.0), actions)  # type: ignore[arg-type]
    for run in (scaled, sharpe, penalised):
        for (obs_a, *_), (obs_b, *_) in zip(base, run, strict=True):
            np.testing.assert_array_equal(obs_a, obs_b)
    raw = np.array([r for _, r, *_ in base[1:]])
    np.testing.assert_allclose([r for _, r, *_ in scaled[1:]], raw * 100.0)
    shaped = np.array([r for _, r, *_ in sharpe[1:]])
    assert shaped[0] == 0.0 and np.all(np.isfinite(shaped)) and not np.allclose(shaped, raw)
    penalty = raw - np.array([r for _, r, *_ in penalised[1:]])
    assert np.all(penalty >= 0) and penalty.max() > 0
    with pytest.raises(ValidationError, match="eta"):
        DifferentialSharpeReward(TradingEnv(aapl), eta=1.5)  # type: ignore[arg-type]
