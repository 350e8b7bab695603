"""Benchmark: feature computation and observation building.

Run: .venv/bin/python bench/bench_features.py
Prints best-of-N timings for:
  * compute_features over 1,000,000 bars (default FeatureSpec, 14 columns)
  * IncrementalFeatures.update per bar, and a JSON to_state/from_state round trip
  * normalise over 1,000,000 rows
  * observation_at per call (the RL env step path) and observations_batch per row
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np

from stocktrade.quant.features import FeatureSpec, IncrementalFeatures, compute_features
from stocktrade.quant.observation import (
    ObservationSpec,
    normalise,
    observation_at,
    observations_batch,
)

N_BARS = 1_000_000


def best_of(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(1)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, N_BARS)))
    volume = rng.lognormal(13.0, 0.5, N_BARS)
    spec = FeatureSpec()

    t0 = time.perf_counter()
    compute_features(close[:100], close[:100], close[:100], close[:100], volume[:100], spec)
    print(
        f"first compute_features call (JIT compile or cache load): {time.perf_counter() - t0:.3f} s"
    )

    secs = best_of(lambda: compute_features(close, close, close, close, volume, spec), 5)
    print(
        f"compute_features, {N_BARS:,} bars x {spec.n_features} features: "
        f"best {secs * 1e3:7.1f} ms  ({secs / N_BARS * 1e9:.0f} ns/bar)"
    )

    inc = IncrementalFeatures(spec)
    n_inc = 200_000

    def run_incremental() -> None:
        for i in range(n_inc):
            inc.update(close[i], close[i], close[i], close[i], volume[i])

    secs = best_of(run_incremental, 3)
    print(f"IncrementalFeatures.update: best {secs / n_inc * 1e6:6.2f} us/bar")

    def round_trips() -> None:
        for _ in range(1000):
            IncrementalFeatures.from_state(json.loads(json.dumps(inc.to_state())))

    secs = best_of(round_trips, 3)
    print(f"to_state -> json -> from_state round trip: best {secs / 1000 * 1e6:6.1f} us")

    features = compute_features(close, close, close, close, volume, spec)
    obs_spec = ObservationSpec().fit(features, spec.names(), spec.warmup, N_BARS // 2)
    secs = best_of(lambda: normalise(features, obs_spec), 5)
    print(f"normalise, {N_BARS:,} rows -> {obs_spec.n_features} columns: best {secs * 1e3:6.1f} ms")

    norm = normalise(features, obs_spec)
    n_obs = 200_000
    ts = rng.integers(0, N_BARS, n_obs)
    ts_list = ts.tolist()

    def run_single() -> None:
        for t in ts_list:
            observation_at(norm, t, 1.0, 0.0)

    secs = best_of(run_single, 5)
    print(
        f"observation_at (obs_dim={obs_spec.obs_dim}, window={obs_spec.window}): "
        f"best {secs / n_obs * 1e6:6.2f} us/call"
    )
    positions = rng.choice([-1.0, 0.0, 1.0], n_obs)
    secs = best_of(lambda: observations_batch(norm, ts, positions, 0.0), 5)
    print(
        f"observations_batch, {n_obs:,} rows: best {secs * 1e3:6.1f} ms ({secs / n_obs * 1e9:.0f} ns/row)"
    )


if __name__ == "__main__":
    main()
