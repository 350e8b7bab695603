"""Google Cloud adapters (GCS, Cloud Run Jobs, ...).

Kept light on purpose: importing this package imports no Google client. Each module imports
its client library on first use.
"""
