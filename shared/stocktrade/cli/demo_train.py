"""The training part of ``stocktrade demo``: a small PPO agent on one symbol's real daily bars.

Trains on AAPL from the imported StockNet file (September 2012 - December 2014; the
observation normalisation is fitted on that range only), exports the policy to ONNX with the
parity check, registers it as the next version of the ``demo-aapl`` agent, backtests it on
2015 (never seen in training) against buy-and-hold and an SMA 10/30 crossover with the same
costs, and prints the comparison and the promotion gate's decision. The budget (500,000 env
steps, seeded, one torch thread so the result is reproducible) takes 30 s to 2 minutes on two
cores, depending on what else runs. It goes through the same service as ``stocktrade train``
and is recorded as a training run.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["DEMO_AGENT", "DEMO_REQUEST", "run"]

DEMO_AGENT = "demo-aapl"
DEMO_SYMBOL = "AAPL"
#: The demo's training request (see :class:`stocktrade.services.training.TrainRequest`).
DEMO_REQUEST: dict[str, Any] = {
    "agent": DEMO_AGENT,
    "symbols": [DEMO_SYMBOL],
    "train_start": "2012-09-01",
    "train_end": "2014-12-31",
    "val_start": "2015-01-01",
    "val_end": "2015-12-31",
    "env": {"random_start": True, "episode_length": 252, "commission_bps": 1, "slippage_bps": 2},
    "ppo": {
        "total_timesteps": 500_000,
        "n_envs": 8,
        "n_steps": 256,
        "batch_size": 512,
        "n_epochs": 5,
        "net_arch": [64, 64],
        "seed": 0,
        "torch_threads": 1,  # bit-stable results; small nets gain nothing from more threads
    },
    "gate": {"metric": "sharpe", "margin": 0.0},
}


def run(console: Console, request: dict[str, Any] | None = None) -> None:
    """Train, export, register and gate the demo policy; print the comparison and decision."""
    from stocktrade.cli.backtest import OWNER, container
    from stocktrade.cli.train import _Bar, print_training
    from stocktrade.services.training import run_training_now

    req = dict(request or DEMO_REQUEST)
    c = container()
    stored = {s.symbol for s in c.bars().summary(list(req["symbols"])) if s.timeframe == "1d"}
    missing = [s for s in req["symbols"] if s not in stored]
    if missing:
        console.print(
            f"[yellow]no daily bars for {', '.join(missing)}: import "
            "daily_us_stocks_stocknet.csv to run the training demo[/yellow]"
        )
        return
    ppo, env = req["ppo"], req["env"]
    console.print(
        f"PPO on {', '.join(req['symbols'])} daily bars: train {req['train_start']} -> "
        f"{req['train_end']}, validate {req['val_start']} -> {req['val_end']}; "
        f"{ppo['total_timesteps']:,} env steps, {ppo['n_envs']} envs, net {ppo['net_arch']}, "
        f"seed {ppo['seed']}; costs {env['commission_bps']} bps commission + "
        f"{env['slippage_bps']} bps slippage, fills at the next open"
    )
    started = time.perf_counter()
    with _Bar(console) as bar:
        result = run_training_now(req, deps=c.training(), owner=OWNER, on_progress=bar)
    print_training(console, result)
    console.print(f"training demo done in {time.perf_counter() - started:.1f} s")
