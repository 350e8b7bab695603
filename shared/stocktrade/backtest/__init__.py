"""stocktrade.backtest."""
