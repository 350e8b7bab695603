"""The training Cloud Run Job."""
