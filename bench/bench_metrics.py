"""Benchmark: the full metric suite on 1,000,000 returns (target <= 50 ms).

Run: .venv/bin/python bench/bench_metrics.py
Prints the best of several runs (the first call, which may compile, is reported apart).
"""

from __future__ import annotations

import time

import numpy as np

from stocktrade.quant.metrics import compute_metrics

N = 1_000_000
REPEATS = 15


def main() -> None:
    rng = np.random.default_rng(42)
    returns = rng.normal(0.0003, 0.01, N)
    equity = 100_000.0 * np.cumprod(1.0 + returns)
    exposure = rng.choice([-1.0, 0.0, 1.0], N)
    traded = np.abs(np.diff(exposure, prepend=0.0)) * equity
    trade_pnls = rng.normal(5.0, 100.0, N // 100)
    kwargs = {
        "trade_pnls": trade_pnls,
        "traded_notional": traded,
        "equity": equity,
        "exposure": exposure,
    }

    t0 = time.perf_counter()
    compute_metrics(returns, **kwargs)
    first = time.perf_counter() - t0

    full, returns_only = [], []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        metrics = compute_metrics(returns, **kwargs)
        full.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        compute_metrics(returns)
        returns_only.append(time.perf_counter() - t0)

    print(f"compute_metrics first call (includes JIT/cache load): {first * 1e3:8.2f} ms")
    print(
        f"compute_metrics, {N:,} returns, all inputs:  best {min(full) * 1e3:6.2f} ms  "
        f"median {np.median(full) * 1e3:6.2f} ms  (target <= 50 ms)"
    )
    print(
        f"compute_metrics, {N:,} returns only:        best {min(returns_only) * 1e3:6.2f} ms  "
        f"median {np.median(returns_only) * 1e3:6.2f} ms"
    )
    print(f"sample: sharpe={metrics['sharpe']:.4f} max_drawdown={metrics['max_drawdown']:.4f}")


if __name__ == "__main__":
    main()
