"""stocktrade.rl."""
