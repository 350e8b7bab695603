"""The lifecycle every run goes through, whatever its kind.

:func:`submit_run` records a validated request as a ``queued`` run and only then hands it to
a launcher, so an accepted request is never lost: if the launch fails, the run is marked
failed with the reason and the request stays in the row.

:func:`execute_run` is the part :func:`~stocktrade.services.backtest_runs.execute_backtest_run`
and :func:`~stocktrade.services.training.execute_training_run` share: refuse a run of the wrong
kind or in the wrong state, validate the stored request again before any work (a bad one fails
the run with the reason), mark it running, do the work, and map the outcome onto the run row:
a :class:`~stocktrade.errors.CancelledError` ends it ``cancelled``, anything else (a
``KeyboardInterrupt`` too) ends it ``failed`` with the reason and is raised again. With
``capture_log`` the run's own lines and warnings go to ``runs/<id>/job.log``
(:func:`capture_job_log`).
"""

from __future__ import annotations

import contextlib
import logging
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from stocktrade.domain.runs import Run, RunKind, RunStatus
from stocktrade.errors import (
    CancelledError,
    ConflictError,
    NotFoundError,
    StocktradeError,
    TransientError,
    ValidationError,
)
from stocktrade.logging import JsonFormatter, get_logger

if TYPE_CHECKING:
    from stocktrade.ports import JobLauncher, ObjectStore, RunRepository

__all__ = ["JobLog", "capture_job_log", "execute_run", "submit_run"]

_log = get_logger(__name__)

P = TypeVar("P")
T = TypeVar("T")


class _LinesHandler(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.lines = lines
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # logging must never break the run
            self.handleError(record)


class JobLog:
    """A run's own lines and warnings, written to ``runs/<id>/job.log`` at the end (in-process
    runs and jobs asked to upload their log; a subprocess launcher captures stdout instead).

    Args:
        store: where ``job.log`` goes.
        run_id: the run.
        logger: where a failed upload is reported.
    """

    def __init__(self, store: ObjectStore, run_id: str, logger: logging.Logger = _log) -> None:
        self.store = store
        self.key = f"runs/{run_id}/job.log"
        self.lines: list[str] = []
        self.handler = _LinesHandler(self.lines)
        self._log = logger

    def line(self, text: str) -> None:
        """Append one timestamped line."""
        self.lines.append(f"{datetime.now(UTC).isoformat(timespec='milliseconds')} {text}")

    def flush(self) -> None:
        """Upload the lines; a failure is logged, never raised."""
        try:
            self.store.put_bytes(
                self.key, ("\n".join(self.lines) + "\n").encode(), "text/plain; charset=utf-8"
            )
        except Exception as exc:  # the run's outcome matters more than its log
            self._log.warning("could not write job.log", extra={"key": self.key, "error": str(exc)})


@contextmanager
def capture_job_log(
    store: ObjectStore, run_id: str, enabled: bool, logger: logging.Logger = _log
) -> Iterator[JobLog | None]:
    """Collect the root logger's warnings into a :class:`JobLog` while the block runs, then
    upload it; yields None (and collects nothing) when not ``enabled``."""
    if not enabled:
        yield None
        return
    job_log = JobLog(store, run_id, logger)
    root = logging.getLogger()
    root.addHandler(job_log.handler)
    try:
        yield job_log
    finally:
        root.removeHandler(job_log.handler)
        job_log.flush()


def submit_run(
    config: Mapping[str, Any],
    *,
    kind: RunKind,
    label: str,
    runs: RunRepository,
    store: ObjectStore,
    launcher: JobLauncher | None,
    owner: str,
    fields: Mapping[str, Any],
    logger: logging.Logger = _log,
) -> Run:
    """Record an already validated request as a queued run of ``kind``, then launch its job
    (when a launcher is given).

    Args:
        config: the request as stored in the run row.
        kind: the run's kind (also the job the launcher starts).
        label: what the log lines call it (``backtest`` -> "backtest accepted").
        runs, store: the run repository; the object store (the run's artifact prefix).
        launcher: starts the job; None leaves the run queued.
        owner: who submitted it.
        fields: extra fields of the "accepted" log line.
        logger: the caller's logger (the lines keep its name).

    Returns:
        The run (``queued``; with a launcher, its execution name is recorded).

    Raises:
        TransientError: the launch failed; the run is recorded as failed with the reason.
    """
    run_id = str(uuid.uuid4())
    run = runs.create(
        kind.value,
        config,
        owner=owner,
        run_id=run_id,
        artifact_prefix=store.uri(f"runs/{run_id}/"),
    )
    logger.info(f"{label} accepted", extra={"run_id": run_id, **fields})
    if launcher is None:
        return run
    try:
        execution = launcher.launch(kind.value, run_id)
    except Exception as exc:
        runs.fail(run_id, f"could not launch the {label} job: {exc}", message="launch failed")
        raise TransientError(
            f"run {run_id} was recorded but its job could not start: {exc}"
        ) from exc
    runs.set_execution(run_id, execution)
    return runs.get(run_id)


def execute_run(
    run_id: str,
    *,
    runs: RunRepository,
    store: ObjectStore,
    kind: RunKind,
    label: str,
    noun: str,
    prepare: Callable[[Run], P],
    work: Callable[[Run, P, JobLog | None], T],
    wrap: Callable[[Run], T],
    execution: str | None = None,
    restart: bool = False,
    capture_log: bool = False,
    logger: logging.Logger = _log,
) -> T:
    """Execute a queued run of ``kind`` to its end.

    Args:
        run_id: the run.
        runs, store: the run repository; the object store (``job.log``).
        kind: the kind the run must be.
        label: what the log lines call it (``backtest`` -> "backtest run <id>", "backtest
            failed").
        noun: what the wrong-kind error calls it (``a backtest``).
        prepare: validates the run's stored request into a plan; raises ValidationError.
        work: does the run (the plan and job log in) and returns its outcome, ending the run
            itself when it succeeds; raises CancelledError when its owner cancelled it.
        wrap: the outcome of a run that ended without ``work`` (cancelled).
        execution: Cloud Run execution name (or local description), recorded on the run.
        restart: this is a retry of a task that died while running (Cloud Run attempt > 0).
        capture_log: write this run's lines and warnings to ``job.log`` in the object store.
        logger: the caller's logger (the lines keep its name).

    Raises:
        ValidationError: the stored request is invalid (the run is marked failed, no work done).
        ConflictError: the run is not a queued run of ``kind`` (already running or finished).
        StocktradeError, Exception: anything else that failed (the run is marked failed).
    """
    run = runs.get(run_id)
    if run.kind is not kind:
        raise ConflictError(f"run {run_id} is a {run.kind.value} run, not {noun}")
    if run.status is RunStatus.CANCELLED:
        logger.info("run was cancelled before it started", extra={"run_id": run_id})
        return wrap(run)
    if run.status.is_terminal or (run.status is RunStatus.RUNNING and not restart):
        raise ConflictError(
            f"run {run_id} is already {run.status.value}; it cannot be executed again"
        )
    with capture_job_log(store, run.id, capture_log, logger) as job_log:
        if job_log is not None:
            job_log.line(f"{label} run {run.id} execution={execution or '-'}")
        # Validate before any work: a bad request fails the run with the reason.
        try:
            plan = prepare(run)
        except ValidationError as exc:
            if job_log is not None:
                job_log.line(f"rejected: {exc}")
            runs.fail(run.id, str(exc), message="rejected: invalid request")
            raise
        try:
            run = runs.start(run.id, execution=execution, restart=restart)
        except ConflictError:
            current = runs.get(run.id)
            if current.status is RunStatus.CANCELLED:
                return wrap(current)  # cancelled between our read and the start: nothing to do
            raise
        try:
            return work(run, plan, job_log)
        except CancelledError as exc:
            if job_log is not None:
                job_log.line(str(exc))
            return wrap(runs.mark_cancelled(run.id, message="cancelled by its owner"))
        except BaseException as exc:  # KeyboardInterrupt too: never leave a run "running"
            reason = (
                str(exc) if isinstance(exc, StocktradeError) else f"{type(exc).__name__}: {exc}"
            )
            if job_log is not None:
                job_log.line("failed: " + reason)
                job_log.lines.append(traceback.format_exc())
            logger.error(f"{label} failed", extra={"run_id": run.id, "error": reason})
            # Already finished elsewhere (e.g. cancelled)? Keep that outcome.
            with contextlib.suppress(ConflictError, NotFoundError):
                runs.fail(run.id, reason, message="failed")
            raise
