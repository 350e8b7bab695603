"""stocktrade.adapters.local."""
