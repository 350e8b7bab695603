"""stocktrade.domain."""
