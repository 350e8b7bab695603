"""stocktrade.adapters.market."""
