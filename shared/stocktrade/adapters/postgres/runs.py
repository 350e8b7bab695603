"""Runs in Postgres: the ``runs`` table and its legal state moves.

Every state move is one ``UPDATE ... WHERE status = ANY(<states it may come from>)``, so two
processes racing (a job finishing while its owner cancels it) cannot both win: the loser gets
a :class:`~stocktrade.errors.ConflictError` naming the state it found. The legal moves are
:data:`stocktrade.domain.runs.TRANSITIONS`.

The connection should be in autocommit mode: each call is then its own transaction and is
visible to other processes (the job, the CLI, the API) as soon as it returns.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from stocktrade.domain.runs import TRANSITIONS, Run, RunKind, RunStatus, dumps_json
from stocktrade.errors import ConflictError, NotFoundError, ValidationError
from stocktrade.logging import get_logger

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresRunRepository"]

log = get_logger(__name__)

_COLUMNS = (
    "id::text, owner, kind, status, config, progress, eta_seconds, message, error, "
    "artifact_prefix, artifacts, metrics, cancel_requested, execution, created_at, started_at, "
    "finished_at, heartbeat_at, initial_cash, final_equity, total_fees"
)
_MAX_TEXT = 8000  # error and message text kept per run (a traceback tail is plenty)
_MONEY = ("initial_cash", "final_equity", "total_fees")


def _sources(new: RunStatus) -> list[str]:
    """States a run may be in to become ``new``."""
    return [s.value for s, targets in TRANSITIONS.items() if new in targets]


def _uuid(run_id: str) -> str:
    try:
        return str(uuid.UUID(str(run_id)))
    except ValueError:
        raise NotFoundError(f"no run {run_id!r}: run ids are UUIDs") from None


def _clip(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= _MAX_TEXT else "..." + text[-(_MAX_TEXT - 3) :]


def _to_run(row: tuple[Any, ...]) -> Run:
    (
        id_,
        owner,
        kind,
        status,
        config,
        progress,
        eta,
        message,
        error,
        prefix,
        artifacts,
        metrics,
        cancel,
        execution,
        created,
        started,
        finished,
        heartbeat,
        cash,
        equity,
        fees,
    ) = row
    return Run(
        id=id_, owner=owner, kind=RunKind(kind), status=RunStatus(status), config=config or {},
        progress=float(progress), eta_seconds=None if eta is None else float(eta),
        message=message, error=error, artifact_prefix=prefix, artifacts=artifacts or {},
        metrics=metrics, cancel_requested=bool(cancel), execution=execution, created_at=created,
        started_at=started, finished_at=finished, heartbeat_at=heartbeat, initial_cash=cash,
        final_equity=equity, total_fees=fees,
    )  # fmt: skip


class PostgresRunRepository:
    """Creates runs and moves them through their states.

    Args:
        conn: an open (preferably autocommit) psycopg connection to a migrated database.
    """

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    # -- reads ----------------------------------------------------------------------------
    def get(self, run_id: str, *, owner: str | None = None) -> Run:
        """The run ``run_id`` (of ``owner``, when given: another user's run is not found).

        Raises:
            NotFoundError: no such run (for this owner).
        """
        rid = _uuid(run_id)
        sql = f"SELECT {_COLUMNS} FROM runs WHERE id = %s"
        params: builtins.list[Any] = [rid]
        if owner is not None:
            sql += " AND owner = %s"
            params.append(owner)
        row = self.conn.execute(sql, params).fetchone()
        if row is None:
            raise NotFoundError(f"no run {run_id}" + (f" for user {owner!r}" if owner else ""))
        return _to_run(row)

    def list(
        self,
        *,
        owner: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        limit: int = 50,
    ) -> builtins.list[Run]:
        """Runs, newest first, optionally filtered by owner, kind and status."""
        sql = f"SELECT {_COLUMNS} FROM runs WHERE true"
        params: builtins.list[Any] = []
        for column, value in (("owner", owner), ("kind", kind), ("status", status)):
            if value is not None:
                sql += f" AND {column} = %s"
                params.append(str(value))
        sql += " ORDER BY created_at DESC, id LIMIT %s"
        params.append(max(1, int(limit)))
        return [_to_run(r) for r in self.conn.execute(sql, params)]

    def resolve(self, id_or_prefix: str, *, owner: str | None = None) -> str:
        """The full id of a run named by its id or a unique prefix of it (at least 4 characters).

        Raises:
            NotFoundError: no run matches.
            ValidationError: the prefix is too short or matches several runs.
        """
        text = id_or_prefix.strip().lower()
        try:
            return str(uuid.UUID(text))
        except ValueError:
            pass
        if len(text) < 4 or any(c not in "0123456789abcdef-" for c in text):
            raise ValidationError(
                f"run id must be a UUID or a prefix of at least 4 hex digits, found {id_or_prefix!r}"
            )
        sql = "SELECT id::text FROM runs WHERE id::text LIKE %s"
        params: builtins.list[Any] = [text + "%"]
        if owner is not None:
            sql += " AND owner = %s"
            params.append(owner)
        ids = [r[0] for r in self.conn.execute(sql + " LIMIT 3", params)]
        if not ids:
            raise NotFoundError(f"no run with id starting {text!r}")
        if len(ids) > 1:
            raise ValidationError(f"run id prefix {text!r} is ambiguous ({', '.join(ids)}, ...)")
        return str(ids[0])

    # -- create ---------------------------------------------------------------------------
    def create(
        self,
        kind: str,
        config: Mapping[str, Any],
        *,
        owner: str = "local",
        run_id: str | None = None,
        artifact_prefix: str | None = None,
        message: str | None = None,
    ) -> Run:
        """Record an accepted request as a ``queued`` run (before anything is launched).

        Raises:
            ValidationError: unknown kind.
            ConflictError: ``run_id`` is taken.
        """
        import psycopg

        try:
            run_kind = RunKind(kind)
        except ValueError:
            raise ValidationError(
                f"run kind must be one of {[k.value for k in RunKind]}, found {kind!r}"
            ) from None
        rid = _uuid(run_id) if run_id is not None else str(uuid.uuid4())
        try:
            with self.conn.transaction():
                # A signed-in user may not have a users row yet; the run must not be lost for it.
                self.conn.execute(
                    "INSERT INTO users (id) VALUES (%s) ON CONFLICT (id) DO NOTHING", (owner,)
                )
                row = self.conn.execute(
                    f"INSERT INTO runs (id, owner, kind, status, config, artifact_prefix, message) "
                    f"VALUES (%s, %s, %s, 'queued', %s::jsonb, %s, %s) RETURNING {_COLUMNS}",
                    (
                        rid,
                        owner,
                        run_kind.value,
                        dumps_json(dict(config)),
                        artifact_prefix,
                        _clip(message or "queued"),
                    ),
                ).fetchone()
        except psycopg.errors.UniqueViolation:
            raise ConflictError(f"run {rid} already exists") from None
        assert row is not None
        log.info("run created", extra={"run_id": rid, "kind": run_kind.value, "owner": owner})
        return _to_run(row)

    # -- state moves ----------------------------------------------------------------------
    def _move(
        self,
        run_id: str,
        new: RunStatus,
        sets: str,
        params: builtins.list[Any],
        *,
        sources: builtins.list[str] | None = None,
    ) -> Run:
        rid = _uuid(run_id)
        allowed = sources if sources is not None else _sources(new)
        row = self.conn.execute(
            f"UPDATE runs SET {sets} WHERE id = %s AND status = ANY(%s) RETURNING {_COLUMNS}",
            [*params, rid, allowed],
        ).fetchone()
        if row is not None:
            run = _to_run(row)
            log.info("run moved", extra={"run_id": rid, "status": run.status.value})
            return run
        current = self.get(rid)
        raise ConflictError(
            f"run {rid} is {current.status.value}; it cannot become {new.value} "
            f"(only a run that is {' or '.join(allowed)} can)"
        )

    def start(self, run_id: str, *, execution: str | None = None, restart: bool = False) -> Run:
        """``queued -> running`` (with ``restart``, also a ``running`` run whose earlier
        attempt died: Cloud Run retries a task with the same run id).

        Raises:
            ConflictError: the run is not queued (e.g. cancelled before it started).
        """
        sources = ["queued", "running"] if restart else ["queued"]
        return self._move(
            run_id, RunStatus.RUNNING,
            "status = 'running', started_at = coalesce(started_at, now()), heartbeat_at = now(), "
            "execution = coalesce(%s, execution), message = 'running', error = NULL",
            [execution], sources=sources,
        )  # fmt: skip

    def set_execution(self, run_id: str, execution: str) -> None:
        """Record the Cloud Run execution name (or local process) that runs ``run_id``."""
        self.conn.execute(
            "UPDATE runs SET execution = %s WHERE id = %s", (execution, _uuid(run_id))
        )

    def report_progress(
        self,
        run_id: str,
        progress: float,
        *,
        eta_seconds: float | None = None,
        message: str | None = None,
    ) -> bool:
        """Record progress (0..1, never going backwards) and a heartbeat of a running run.

        Returns:
            True if the owner asked to cancel the run (the job should stop).

        Raises:
            ConflictError: the run is not running.
        """
        value = min(1.0, max(0.0, float(progress)))
        rid = _uuid(run_id)
        row = self.conn.execute(
            "UPDATE runs SET progress = greatest(progress, %s), eta_seconds = %s, "
            "message = coalesce(%s, message), heartbeat_at = now() "
            "WHERE id = %s AND status = 'running' RETURNING cancel_requested",
            (value, eta_seconds, _clip(message), rid),
        ).fetchone()
        if row is None:
            current = self.get(rid)
            raise ConflictError(
                f"run {rid} is {current.status.value}; progress is recorded only while running"
            )
        return bool(row[0])

    def heartbeat(self, run_id: str) -> bool:
        """Record that a running run is alive; True if cancellation was requested."""
        row = self.conn.execute(
            "UPDATE runs SET heartbeat_at = now() WHERE id = %s AND status = 'running' "
            "RETURNING cancel_requested", (_uuid(run_id),),
        ).fetchone()  # fmt: skip
        return bool(row and row[0])

    def succeed(
        self,
        run_id: str,
        *,
        metrics: Mapping[str, Any] | None = None,
        artifacts: Mapping[str, str] | None = None,
        message: str | None = None,
        money: Mapping[str, Decimal] | None = None,
    ) -> Run:
        """``running -> succeeded`` with metrics, artifact URIs and exact money results.

        Args:
            metrics: JSON-safe metrics (NaN/inf are stored as null).
            artifacts: artifact name -> URI (merged into what is stored).
            money: any of ``initial_cash``, ``final_equity``, ``total_fees`` (Decimal).
        """
        money = dict(money or {})
        unknown = set(money) - set(_MONEY)
        if unknown:
            raise ValidationError(
                f"unknown money fields {sorted(unknown)}; expected {list(_MONEY)}"
            )
        return self._move(
            run_id, RunStatus.SUCCEEDED,
            "status = 'succeeded', progress = 1, eta_seconds = 0, finished_at = now(), "
            "heartbeat_at = now(), metrics = %s::jsonb, artifacts = artifacts || %s::jsonb, "
            "message = %s, initial_cash = %s, final_equity = %s, total_fees = %s",
            [None if metrics is None else dumps_json(dict(metrics)), dumps_json(dict(artifacts or {})),
             _clip(message or "succeeded"), *(money.get(k) for k in _MONEY)],
        )  # fmt: skip

    def add_artifacts(self, run_id: str, artifacts: Mapping[str, str]) -> None:
        """Merge artifact name -> URI entries into a run (any state)."""
        self.conn.execute(
            "UPDATE runs SET artifacts = artifacts || %s::jsonb WHERE id = %s",
            (dumps_json(dict(artifacts)), _uuid(run_id)),
        )

    def fail(self, run_id: str, error: str, *, message: str | None = None) -> Run:
        """``queued|running -> failed`` with the reason."""
        text = str(error).strip() or "failed without a message"
        return self._move(
            run_id, RunStatus.FAILED,
            "status = 'failed', error = %s, message = %s, finished_at = now(), eta_seconds = NULL",
            [_clip(text), _clip(message or "failed")],
        )  # fmt: skip

    def request_cancel(self, run_id: str, *, owner: str | None = None) -> Run:
        """Cancel a run: a queued run is cancelled at once; a running one gets
        ``cancel_requested`` and its job stops at its next checkpoint.

        Raises:
            NotFoundError: no such run (for this owner).
            ConflictError: the run already finished.
        """
        rid = _uuid(run_id)
        sql = (
            "UPDATE runs SET cancel_requested = true, "
            "status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END, "
            "finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END, "
            "message = CASE WHEN status = 'queued' THEN 'cancelled before it started' "
            "ELSE 'cancellation requested' END "
            "WHERE id = %s AND status IN ('queued', 'running')"
        )
        params: builtins.list[Any] = [rid]
        if owner is not None:
            sql += " AND owner = %s"
            params.append(owner)
        row = self.conn.execute(sql + f" RETURNING {_COLUMNS}", params).fetchone()
        if row is not None:
            log.info("run cancel requested", extra={"run_id": rid})
            return _to_run(row)
        current = self.get(rid, owner=owner)
        raise ConflictError(f"run {rid} already {current.status.value}; nothing to cancel")

    def mark_cancelled(self, run_id: str, *, message: str | None = None) -> Run:
        """``queued|running -> cancelled`` (the job honoured a cancel request)."""
        return self._move(
            run_id, RunStatus.CANCELLED,
            "status = 'cancelled', finished_at = now(), eta_seconds = NULL, message = %s",
            [_clip(message or "cancelled")],
        )  # fmt: skip

    def fail_stale(self, timeout_seconds: float) -> builtins.list[str]:
        """Fail running runs whose job has sent no heartbeat for ``timeout_seconds`` (the job
        died without reporting); return their ids. For a periodic sweeper."""
        rows = self.conn.execute(
            "UPDATE runs SET status = 'failed', finished_at = now(), message = 'failed', "
            "error = format('no heartbeat for %%s s: the job stopped without reporting', %s::text) "
            "WHERE status = 'running' AND heartbeat_at < now() - make_interval(secs => %s) "
            "RETURNING id::text",
            (str(int(timeout_seconds)), float(timeout_seconds)),
        ).fetchall()
        return [r[0] for r in rows]
