"""RL stack benchmark: env steps/s, batched env steps/s, PPO fps, ONNX policy latency.

Run: ``.venv/bin/python bench/bench_rl.py`` (options: ``--quick``, ``--reps N``). Prints, in
one run, on real daily bars (``../shared/data/daily_us_stocks_stocknet.csv``):

1. single-env steps/s of :class:`TradingEnv` vs gym-anytrading ``stocks-v0`` (target >= 2x);
2. :class:`TradingVecEnv` env-steps/s with 256 envs (target >= 5,000,000);
3. SB3 PPO fps on TradingEnv vs on a plain gymnasium env with the same observation and
   action spaces (target >= 1.0x);
4. :class:`OnnxPolicyRuntime` latency p50/p99 at batch 1 (targets <= 15 µs / <= 40 µs) vs SB3
   ``predict``.

Timings are best of ``--reps`` repetitions (the machine is shared; the best run is the one
least disturbed). Every comparison interleaves its two sides so both see the same noise.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from stocktrade.data.csv_bars import read_bars_csv
from stocktrade.quant.observation import ObservationSpec
from stocktrade.rl.env import EnvConfig, EnvData, TradingEnv, fit_observation_spec

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "daily_us_stocks_stocknet.csv"
TRAIN_END = "2014-12-31"


def best_rate(fn: Callable[[], int], reps: int) -> float:
    """Best items/second over ``reps`` runs of ``fn`` (which returns the item count)."""
    rates = []
    for _ in range(reps):
        start = time.perf_counter()
        count = fn()
        rates.append(count / (time.perf_counter() - start))
    return max(rates)


# ---------------------------------------------------------------------------- 1. single env


def run_ours(env: TradingEnv, actions: list[int]) -> int:
    env.reset(seed=0)
    step = env.step
    reset = env.reset
    for a in actions:
        _, _, terminated, truncated, _ = step(a)
        if terminated or truncated:
            reset()
    return len(actions)


def run_anytrading(env: gym.Env[Any, Any], actions: list[int]) -> int:
    env.reset(seed=0)
    step = env.step
    reset = env.reset
    for a in actions:
        _, _, terminated, truncated, _ = step(a)
        if terminated or truncated:
            reset()
    return len(actions)


def bench_single(bars: Any, spec: ObservationSpec, n: int, reps: int) -> None:
    import gym_anytrading  # noqa: F401 - registers stocks-v0

    aapl = bars["AAPL"]
    ours = TradingEnv(EnvData.from_bars(aapl, spec), EnvConfig())
    df = aapl.to_frame()
    window = spec.window
    wrapped = gym.make("stocks-v0", df=df, window_size=window, frame_bound=(window, len(df)))
    raw = wrapped.unwrapped
    # Python ints, as an agent loop passes them (env.action_space.sample() gives np.int64).
    actions = [int(a) for a in np.random.default_rng(0).integers(0, 2, n)]
    actions3 = [int(a) for a in np.random.default_rng(0).integers(0, 3, n)]
    run_ours(ours, actions3[:1000])
    run_anytrading(raw, actions[:1000])
    rate_ours = rate_any = rate_wrapped = 0.0
    for _ in range(reps):  # interleaved so both see the same machine load
        rate_ours = max(rate_ours, best_rate(lambda: run_ours(ours, actions3), 1))
        rate_any = max(rate_any, best_rate(lambda: run_anytrading(raw, actions), 1))
        rate_wrapped = max(rate_wrapped, best_rate(lambda: run_anytrading(wrapped, actions), 1))
    print("1. single-env steps/s (AAPL daily, 837 bars, window 10)")
    print(
        f"   TradingEnv                         {rate_ours:>12,.0f} steps/s "
        f"({1e6 / rate_ours:.2f} µs/step)"
    )
    print(f"   gym-anytrading stocks-v0 (raw)     {rate_any:>12,.0f} steps/s")
    print(f"   gym-anytrading stocks-v0 (gym.make){rate_wrapped:>12,.0f} steps/s")
    print(f"   ratio vs raw stocks-v0             {rate_ours / rate_any:>12.2f}x   (target >= 2x)")


# ---------------------------------------------------------------------------- 2. vec env


def bench_vec(datas: list[EnvData], n_batches: int, reps: int) -> None:
    from stocktrade.rl.vec_env import TradingVecEnv

    n_envs = 256
    venv = TradingVecEnv(datas, EnvConfig(random_start=True, episode_length=200), n_envs)
    venv.seed(0)
    venv.reset()
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, 3, n_envs) for _ in range(64)]

    def run() -> int:
        step = venv.step
        for k in range(n_batches):
            step(actions[k & 63])
        return n_batches * n_envs

    run()
    rate = best_rate(run, reps)
    print(
        f"2. TradingVecEnv, {n_envs} envs over {len(datas)} symbols (random starts, "
        "episodes of 200 bars, auto-reset)"
    )
    print(
        f"   env-steps/s                        {rate:>12,.0f}   (target >= 5,000,000; "
        f"{1e6 * n_envs / rate:.1f} µs per batch step)"
    )


# ---------------------------------------------------------------------------- 3. PPO fps


class PlainEnv(gym.Env[np.ndarray, int]):
    """The cheapest env with TradingEnv's spaces: constant obs, zero reward, same episodes."""

    def __init__(self, like: TradingEnv, episode_length: int) -> None:
        super().__init__()
        self.observation_space = like.observation_space
        self.action_space = like.action_space
        self._obs: np.ndarray = np.zeros(like.data.obs_dim, dtype=np.float32)
        self._length = episode_length
        self._t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        return self._obs.copy(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._t += 1
        return self._obs.copy(), 0.0, False, self._t >= self._length, {}


def bench_ppo(data: EnvData, timesteps: int, reps: int) -> None:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    from stocktrade.rl.vec_env import TradingVecEnv

    torch.set_num_threads(1)
    config = EnvConfig(random_start=True, episode_length=200)

    def fps(make_env: Callable[[], Any]) -> float:
        model = PPO(
            "MlpPolicy",
            make_env(),
            n_steps=512,
            batch_size=64,
            n_epochs=2,
            seed=0,
            device="cpu",
            policy_kwargs={"net_arch": [64, 64]},
        )
        start = time.perf_counter()
        model.learn(timesteps)
        return timesteps / (time.perf_counter() - start)

    def plain(n: int) -> Callable[[], Any]:
        return lambda: DummyVecEnv(
            [lambda: Monitor(PlainEnv(TradingEnv(data, config), 200))] * n  # type: ignore[list-item]
        )

    cases = [
        # (label, ours, baseline): SB3 wraps a gymnasium env in Monitor + DummyVecEnv itself.
        ("1 env, both in SB3's DummyVecEnv", lambda: TradingEnv(data, config), plain(1)),
        (
            "1 env, TradingVecEnv vs DummyVecEnv",
            lambda: VecMonitor(TradingVecEnv([data], config, 1)),
            plain(1),
        ),
        (
            "8 envs, TradingVecEnv vs DummyVecEnv",
            lambda: VecMonitor(TradingVecEnv([data], config, 8)),
            plain(8),
        ),
    ]
    fps(plain(1))  # warm-up: torch's first allocations and kernels are not the env's cost
    print(
        f"3. SB3 PPO fps (MlpPolicy [64, 64], n_steps 512, batch 64, 2 epochs, {timesteps} "
        "steps, 1 torch thread); baseline: plain gymnasium env with the same spaces"
    )
    for label, ours_env, base_env in cases:
        ours = base = 0.0
        ratios = []
        for k in range(reps):
            # Interleaved pairs in alternating order: a pair shares its machine load, and
            # neither side always runs first.
            if k % 2 == 0:
                a, b = fps(ours_env), fps(base_env)
            else:
                b, a = fps(base_env), fps(ours_env)
            ours, base = max(ours, a), max(base, b)
            ratios.append(a / b)
        print(
            f"   {label:<38} ours {ours:>7,.0f} fps   plain {base:>7,.0f} fps   "
            f"ratio {ours / base:.3f}x (pairs: {', '.join(f'{r:.3f}' for r in ratios)})"
        )
    print("   target >= 1.0x")


# ---------------------------------------------------------------------------- 4. ONNX latency


def latency_us(fn: Callable[[], Any], n: int) -> tuple[float, float]:
    for _ in range(min(2000, n)):
        fn()
    times = np.empty(n)
    clock = time.perf_counter_ns
    for i in range(n):
        start = clock()
        fn()
        times[i] = clock() - start
    return float(np.percentile(times, 50)) / 1e3, float(np.percentile(times, 99)) / 1e3


def bench_onnx(data: EnvData, n: int) -> None:
    import torch
    from stable_baselines3 import PPO

    from stocktrade.adapters.inference.onnx_runtime import OnnxPolicyRuntime
    from stocktrade.rl.export import export_policy, sample_observations

    torch.set_num_threads(1)
    env = TradingEnv(data, EnvConfig())
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=64,
        batch_size=64,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [64, 64]},
    )
    model.learn(64)
    obs = sample_observations(TradingEnv(data, EnvConfig()), 1000, seed=0)
    result = export_policy(model, obs)
    runtime = OnnxPolicyRuntime(result.onnx)
    one = obs[17].copy()
    rt = latency_us(lambda: runtime.act_one(one), n)
    batch = obs[17:18].copy()
    rt_batch = latency_us(lambda: runtime.logits_probs(batch), n)
    sb3 = latency_us(lambda: model.predict(one, deterministic=True), max(2000, n // 10))
    print(
        f"4. policy inference at batch 1 (MlpPolicy [64, 64], obs_dim {data.obs_dim}, "
        f"3 actions; parity max |dlogit| {result.parity.max_abs_logit_diff:.1e})"
    )
    print(
        f"   OnnxPolicyRuntime.act_one          p50 {rt[0]:7.2f} µs   p99 {rt[1]:7.2f} µs   "
        "(targets <= 15 / <= 40)"
    )
    print(
        f"   OnnxPolicyRuntime.logits_probs     p50 {rt_batch[0]:7.2f} µs   p99 {rt_batch[1]:7.2f} µs"
    )
    print(f"   SB3 model.predict(deterministic)   p50 {sb3[0]:7.2f} µs   p99 {sb3[1]:7.2f} µs")
    print(f"   speed-up at p50                    {sb3[0] / rt[0]:>7.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller budgets (smoke run)")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    t0 = time.perf_counter()
    bars = read_bars_csv(DATA)
    symbols = sorted(bars)
    spec = fit_observation_spec([bars[s] for s in symbols], ObservationSpec(), end=TRAIN_END)
    datas = [EnvData.from_bars(bars[s], spec) for s in symbols]
    aapl = datas[symbols.index("AAPL")]
    print(
        f"data: {DATA.name}, {len(symbols)} symbols, {sum(len(b) for b in bars.values()):,} "
        f"bars; obs_dim {spec.obs_dim} (window {spec.window} x {spec.n_features} features "
        f"+ position + sentiment); loaded in {time.perf_counter() - t0:.1f} s"
    )
    with warnings.catch_warnings():
        # gym.make's passive checker warns that stocks-v0 returns views of one array.
        warnings.simplefilter("ignore")
        bench_single(bars, spec, 400_000 // scale, args.reps)
    bench_vec(datas, 8_000 // scale, args.reps)
    bench_ppo(aapl, 8_192 // scale, args.reps)
    bench_onnx(aapl, 100_000 // scale)


if __name__ == "__main__":
    main()
