"""One exception tree for the whole project.

Messages say what was expected and what was found. Entry points map these to HTTP
status codes or exit codes; the event chain maps :class:`TransientError` to a retry and
:class:`PermanentError` (and :class:`ValidationError`) to a dead letter.
"""

from __future__ import annotations


class StocktradeError(Exception):
    """Base class of every error raised on purpose by stocktrade."""


class ValidationError(StocktradeError, ValueError):
    """Input was rejected before anything changed."""


class NotFoundError(StocktradeError, LookupError):
    """A named thing (symbol, run, agent, model version) does not exist."""


class ConfigError(StocktradeError):
    """Settings are missing, unknown or unsafe."""


class ConflictError(StocktradeError):
    """The request conflicts with the current state (e.g. a run that already finished)."""


class TransientError(StocktradeError):
    """A failure worth retrying (database restart, network blip)."""


class PermanentError(StocktradeError):
    """A failure that can never succeed on retry (bad payload); becomes a dead letter."""


class CancelledError(StocktradeError):
    """A long-running run was cancelled by its owner."""
