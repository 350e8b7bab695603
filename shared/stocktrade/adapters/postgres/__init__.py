"""stocktrade.adapters.postgres."""
