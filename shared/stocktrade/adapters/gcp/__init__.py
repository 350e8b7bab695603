"""stocktrade.adapters.gcp."""
