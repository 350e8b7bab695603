"""stocktrade.adapters.inference."""
