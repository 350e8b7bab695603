"""The paper broker as a broker adapter (the simulation itself lives in :mod:`stocktrade.sim.broker`).

The simulated broker is part of the trading core, not an outside system: the backtest engine,
the RL env and the live chain's paper books all fill orders through it. It is re-exported here
so the broker adapters (paper, Alpaca) sit side by side.
"""

from stocktrade.sim.broker import *  # noqa: F403
from stocktrade.sim.broker import SimulatedBroker

__all__ = ["SimulatedBroker"]
