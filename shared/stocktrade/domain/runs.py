"""Runs (training and backtest jobs): their states and the legal moves between them.

A run is accepted as ``queued`` (the row is written before anything is launched, so an
accepted request is never lost), becomes ``running`` when its job starts, and ends in
exactly one terminal state::

    queued ──▶ running ──▶ succeeded
       │          ├──────▶ failed
       │          └──────▶ cancelled
       ├────────────────▶ failed      (rejected before any work, or could not be launched)
       └────────────────▶ cancelled   (cancelled before it started)

Terminal states never change again. Cancelling a running run only sets a flag
(``cancel_requested``); the job honours it at its next checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

__all__ = ["TERMINAL", "TRANSITIONS", "Run", "RunKind", "RunStatus", "can_move", "dumps_json"]


class RunKind(StrEnum):
    """What a run does."""

    TRAIN = "train"
    BACKTEST = "backtest"


class RunStatus(StrEnum):
    """Where a run is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True once the run can never change again."""
        return self in TERMINAL


TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})

#: Legal moves: status -> statuses it may become.
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.RUNNING: frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}


def can_move(current: RunStatus | str, new: RunStatus | str) -> bool:
    """True if a run in ``current`` may become ``new``."""
    return RunStatus(new) in TRANSITIONS[RunStatus(current)]


@dataclass(frozen=True)
class Run:
    """One stored run (a row of ``runs``).

    Attributes:
        id: the run id (a UUID as text).
        owner: user id; every user sees only their own runs.
        kind: ``train`` or ``backtest``.
        status: see :class:`RunStatus`.
        config: the accepted request (JSON-safe), enough to execute the run again.
        progress: 0..1.
        eta_seconds: estimated seconds left, when known.
        message: the latest human-readable status line.
        error: why the run failed (failed runs only).
        artifact_prefix: URI of the folder holding the run's artifacts.
        artifacts: artifact name -> URI.
        metrics: JSON-safe metrics (NaN/inf stored as null).
        cancel_requested: the owner asked to cancel a running run.
        execution: Cloud Run execution name or local process description.
        initial_cash, final_equity, total_fees: exact money of a finished backtest.
    """

    id: str
    owner: str
    kind: RunKind
    status: RunStatus
    config: dict[str, Any] = field(default_factory=dict)
    progress: float = 0.0
    eta_seconds: float | None = None
    message: str | None = None
    error: str | None = None
    artifact_prefix: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    cancel_requested: bool = False
    execution: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    initial_cash: Decimal | None = None
    final_equity: Decimal | None = None
    total_fees: Decimal | None = None

    @property
    def is_terminal(self) -> bool:
        """True once the run can never change again."""
        return self.status.is_terminal

    @property
    def duration_seconds(self) -> float | None:
        """Seconds from start to finish (or to the last heartbeat while running)."""
        end = self.finished_at or self.heartbeat_at
        if self.started_at is None or end is None:
            return None
        return (end - self.started_at).total_seconds()


def dumps_json(value: Any) -> str:
    """JSON text of ``value`` with :class:`~decimal.Decimal` written exactly as a number.

    NaN and infinities (float or Decimal) become ``null`` (strict JSON, Postgres ``jsonb``);
    tuples become lists, datetimes ISO 8601 strings. Postgres stores ``jsonb`` numbers as
    ``numeric``, so money written this way keeps every digit.
    """
    import json
    import math
    import uuid

    marker = f"@@decimal-{uuid.uuid4().hex}-"
    exact: dict[str, str] = {}

    def convert(v: Any) -> Any:
        if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
            return v
        if isinstance(v, Decimal):
            if not v.is_finite():
                return None
            token = f"{marker}{len(exact)}"
            exact[token] = str(v)
            return token
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):
            return {str(k): convert(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        if isinstance(v, datetime):
            return v.isoformat()
        if hasattr(v, "item"):  # numpy scalars
            return convert(v.item())
        return str(v)

    text = json.dumps(convert(value), allow_nan=False)
    for token, number in exact.items():
        text = text.replace(f'"{token}"', number, 1)
    return text
