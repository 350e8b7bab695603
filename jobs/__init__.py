"""Cloud Run Jobs entry points (``python -m jobs.<name>.main``): thin, parse and call a service."""
