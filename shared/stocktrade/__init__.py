"""stocktrade: train, backtest and paper-trade reinforcement-learning trading agents.

Importing this package is cheap on purpose: it pulls in no torch, onnxruntime or Google
client, so every Cloud Function that depends on it keeps a fast cold start.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
