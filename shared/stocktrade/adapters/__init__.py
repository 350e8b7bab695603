"""stocktrade.adapters."""
