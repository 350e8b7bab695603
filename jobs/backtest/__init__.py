"""The backtest Cloud Run Job."""
