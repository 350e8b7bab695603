"""stocktrade.services."""
