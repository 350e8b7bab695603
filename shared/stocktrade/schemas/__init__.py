"""stocktrade.schemas."""
