"""The demo training as a benchmark: wall time, timesteps, fps, validation vs baselines.

Run: ``.venv/bin/python bench/bench_train_demo.py`` (options: ``--timesteps N``, ``--seed S``,
``--torch-threads T``). Trains the ``stocktrade demo`` policy (AAPL daily bars of
``../shared/data/daily_us_stocks_stocknet.csv``, train 2012-09 .. 2014-12, validate 2015;
settings of :data:`stocktrade.cli.demo_train.DEMO_REQUEST`) through the same functions the
training service calls (:func:`stocktrade.rl.pipeline.train_policy`, the promotion gate's
:func:`stocktrade.services.promotion.evaluate_window` and :func:`decide`), without the
database, and prints each stage's time, the training fps and the gate's comparison.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "daily_us_stocks_stocknet.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=None, help="override the demo budget")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--torch-threads", type=int, default=None)
    args = parser.parse_args()

    t0 = time.perf_counter()
    from stocktrade.backtest.engine import run_backtest
    from stocktrade.cli.demo_train import DEMO_REQUEST
    from stocktrade.data.csv_bars import read_bars_csv
    from stocktrade.quant.features import FeatureSpec
    from stocktrade.rl.env import EnvConfig
    from stocktrade.rl.pipeline import policy_strategy, train_policy
    from stocktrade.services.backtest_runs import build_strategy
    from stocktrade.services.promotion import (
        GateConfig,
        backtest_config_for,
        decide,
        evaluate_window,
    )

    req = DEMO_REQUEST
    ppo = dict(req["ppo"])
    for key, value in (("total_timesteps", args.timesteps), ("seed", args.seed),
                       ("torch_threads", args.torch_threads)):  # fmt: skip
        if value is not None:
            ppo[key] = value
    t_import = time.perf_counter() - t0

    t = time.perf_counter()
    symbol = req["symbols"][0]
    bars = read_bars_csv(DATA)[symbol].between(None, req["val_end"] + "T23:59:59")
    t_load = time.perf_counter() - t

    t = time.perf_counter()
    outcome = train_policy(
        [bars],
        train_start=req["train_start"],
        train_end=req["train_end"],
        env=req["env"],
        ppo=ppo,
        parity_observations=1000,
    )
    t_train_export = time.perf_counter() - t

    t = time.perf_counter()
    gate = GateConfig(**req["gate"])
    env = EnvConfig(**req["env"]).model_dump(mode="json")
    manifest = outcome.manifest
    warmup = (
        FeatureSpec.from_dict(manifest["feature_spec"]).warmup
        + int(manifest["observation_spec"]["window"])
        - 1
    )
    evaluation = evaluate_window(
        policy_strategy(outcome.onnx, manifest),
        {symbol: bars},
        start=req["val_start"],
        end=req["val_end"] + "T23:59:59",
        config=backtest_config_for(env),
        baselines={n: build_strategy(n, p) for n, p in gate.baselines.items()},
        engine=run_backtest,
        history_bars=gate.history_bars,
        min_history=int(warmup),
    )
    decision = decide(
        evaluation.policy, evaluation.baselines, metric=gate.metric, margin=gate.margin
    )
    t_gate = time.perf_counter() - t
    wall = time.perf_counter() - t0

    print(f"demo training benchmark: {symbol} train {req['train_start']}..{req['train_end']}, "
          f"validate {req['val_start']}..{req['val_end']}")  # fmt: skip
    print(f"  ppo: {ppo}")
    print(f"  imports              {t_import:8.2f} s")
    print(f"  load bars (CSV)      {t_load:8.2f} s")
    print(f"  train + export       {t_train_export:8.2f} s  (learn {outcome.seconds:.2f} s)")
    print(f"  gate backtests       {t_gate:8.3f} s  (policy + {len(gate.baselines)} baselines)")
    print(f"  wall                 {wall:8.2f} s")
    print(f"  timesteps            {outcome.timesteps:,}")
    print(f"  fps (learn)          {outcome.fps:,.0f} env steps/s")
    print(f"  ONNX parity          max |logit diff| {outcome.parity['max_abs_logit_diff']:.2g} "
          f"on {outcome.parity['n_obs']} obs, {outcome.parity['action_mismatches']} mismatches")  # fmt: skip
    print(f"  validation window    {evaluation.start} .. {evaluation.end} ({evaluation.bars} bars)")
    rows = ("total_return", "sharpe", "sortino", "max_drawdown", "n_trades", "exposure")
    sides = {"policy": evaluation.policy, **evaluation.baselines}
    print("  " + f"{'metric':<14}" + "".join(f"{name:>16}" for name in sides))
    for key in rows:
        print("  " + f"{key:<14}" + "".join(f"{m.get(key, float('nan')):>16.4f}"
                                            for m in sides.values()))  # fmt: skip
    verdict = "PROMOTE" if decision.passed else "REJECT"
    print(f"  gate ({gate.metric}, margin {gate.margin:g}): {verdict}: {decision.reason}")


if __name__ == "__main__":
    main()
