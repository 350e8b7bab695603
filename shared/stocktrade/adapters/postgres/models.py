"""Model versions in Postgres: registration, gate decisions, promotion.

Versions count up per agent name (1, 2, ...). Registration and promotion of an agent name are
serialised by a transaction-scoped advisory lock on the name, so two training runs finishing
together get distinct numbers and two promotions cannot both win; the schema backs this up
(``UNIQUE (agent_name, version)`` and the partial unique index allowing one ``promoted``
version per agent name).

Promotion is one transaction: the agent's promoted version becomes ``retired``, the new one
``promoted`` (with its gate document), the agent row (if any) points at it, and the
``ModelPromoted`` event goes into the outbox, so the state change and the event it causes are
never separated.

Ownership: a version's owner is the owner of the training run that registered it. An agent
name belongs to the first user who trained it; another user's run on the same name is refused
(:class:`~stocktrade.errors.ConflictError`), and owner filters hide other users' versions.
"""

from __future__ import annotations

import builtins
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from stocktrade.domain.model_versions import ModelStatus, ModelVersion
from stocktrade.domain.runs import dumps_json
from stocktrade.errors import ConflictError, NotFoundError, ValidationError
from stocktrade.logging import get_logger

if TYPE_CHECKING:
    import psycopg

    from stocktrade.services.promotion import OutboxItem

__all__ = ["PostgresModelRegistry"]

log = get_logger(__name__)

_SELECT = (
    "SELECT mv.id::text, mv.agent_name, mv.version, mv.status, mv.uri_onnx, mv.sha256, "
    "mv.uri_sb3, mv.manifest, mv.gate, mv.run_id::text, mv.agent_id::text, r.owner, "
    "mv.created_at, mv.promoted_at FROM model_versions mv LEFT JOIN runs r ON r.id = mv.run_id"
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _to_version(row: tuple[Any, ...]) -> ModelVersion:
    (id_, name, version, status, onnx, sha, sb3, manifest, gate, run_id, agent_id, owner,
     created, promoted) = row  # fmt: skip
    return ModelVersion(
        id=id_, agent_name=name, version=int(version), status=ModelStatus(status),
        uri_onnx=onnx, sha256=sha, uri_sb3=sb3, manifest=manifest or {}, gate=gate,
        run_id=run_id, agent_id=agent_id, owner=owner, created_at=created, promoted_at=promoted,
    )  # fmt: skip


def _uuid(value: str, what: str = "model version") -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise NotFoundError(f"no {what} {value!r}: ids are UUIDs") from None


class PostgresModelRegistry:
    """The ``model_versions`` table.

    Args:
        conn: an open autocommit psycopg connection to a migrated database (each method is
            its own transaction).
    """

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    # -- reads ----------------------------------------------------------------------------
    def get(self, version_id: str, *, owner: str | None = None) -> ModelVersion:
        """The version ``version_id`` (of ``owner``'s runs, when given).

        Raises:
            NotFoundError: no such version (for this owner).
        """
        sql = f"{_SELECT} WHERE mv.id = %s"
        params: builtins.list[Any] = [_uuid(version_id)]
        if owner is not None:
            sql += " AND r.owner = %s"
            params.append(owner)
        row = self.conn.execute(sql, params).fetchone()
        if row is None:
            raise NotFoundError(
                f"no model version {version_id}" + (f" for user {owner!r}" if owner else "")
            )
        return _to_version(row)

    def list(
        self,
        *,
        agent_name: str | None = None,
        status: str | None = None,
        owner: str | None = None,
        limit: int = 50,
    ) -> builtins.list[ModelVersion]:
        """Versions by agent name, newest version first, optionally filtered.

        Raises:
            ValidationError: unknown status.
        """
        sql = f"{_SELECT} WHERE true"
        params: builtins.list[Any] = []
        if status is not None:
            try:
                status = ModelStatus(status).value
            except ValueError:
                raise ValidationError(
                    f"status must be one of {[s.value for s in ModelStatus]}, found {status!r}"
                ) from None
            sql += " AND mv.status = %s"
            params.append(status)
        if agent_name is not None:
            sql += " AND mv.agent_name = %s"
            params.append(agent_name)
        if owner is not None:
            sql += " AND r.owner = %s"
            params.append(owner)
        sql += " ORDER BY mv.agent_name, mv.version DESC LIMIT %s"
        params.append(max(1, int(limit)))
        return [_to_version(r) for r in self.conn.execute(sql, params)]

    def promoted(self, agent_name: str) -> ModelVersion | None:
        """The version serving ``agent_name`` now, if any."""
        row = self.conn.execute(
            f"{_SELECT} WHERE mv.agent_name = %s AND mv.status = 'promoted'", (agent_name,)
        ).fetchone()
        return None if row is None else _to_version(row)

    def resolve(self, ref: str, *, owner: str | None = None) -> ModelVersion:
        """A version named by its id, a unique id prefix (>= 4 hex digits), ``agent:version``,
        or an agent name (its promoted version, else its newest).

        Raises:
            NotFoundError: nothing matches.
            ValidationError: the reference is malformed or an id prefix is ambiguous.
        """
        text = str(ref).strip()
        if not text:
            raise ValidationError("a model version reference is empty; give an id or agent:N")
        name, sep, number = text.rpartition(":")
        if sep:
            if not number.isdigit() or not name:
                raise ValidationError(
                    f"model version reference must look like agent:3, found {ref!r}"
                )
            sql = f"{_SELECT} WHERE mv.agent_name = %s AND mv.version = %s"
            params: builtins.list[Any] = [name, int(number)]
            if owner is not None:
                sql += " AND r.owner = %s"
                params.append(owner)
            row = self.conn.execute(sql, params).fetchone()
            if row is None:
                raise NotFoundError(f"no model version {text}")
            return _to_version(row)
        try:
            return self.get(str(uuid.UUID(text)), owner=owner)
        except ValueError:
            pass
        lowered = text.lower()
        if len(lowered) >= 4 and all(c in "0123456789abcdef-" for c in lowered):
            sql = f"{_SELECT} WHERE mv.id::text LIKE %s"
            params = [lowered + "%"]
            if owner is not None:
                sql += " AND r.owner = %s"
                params.append(owner)
            rows = self.conn.execute(sql + " LIMIT 3", params).fetchall()
            if len(rows) > 1:
                raise ValidationError(f"model version id prefix {text!r} is ambiguous")
            if rows:
                return _to_version(rows[0])
        versions = self.list(agent_name=text, owner=owner, limit=1000)
        if not versions:
            raise NotFoundError(f"no model version or agent named {text!r}")
        promoted = [v for v in versions if v.status is ModelStatus.PROMOTED]
        return promoted[0] if promoted else versions[0]

    def check_agent_owner(self, agent_name: str, owner: str) -> None:
        """Refuse an agent name whose versions belong to another user.

        Raises:
            ConflictError: another user's training runs registered ``agent_name``.
        """
        row = self.conn.execute(
            "SELECT 1 FROM model_versions mv JOIN runs r ON r.id = mv.run_id "
            "WHERE mv.agent_name = %s AND r.owner <> %s LIMIT 1",
            (agent_name, owner),
        ).fetchone()
        if row is not None:
            raise ConflictError(
                f"agent name {agent_name!r} is taken by another user; choose another name"
            )

    # -- writes ---------------------------------------------------------------------------
    def _lock(self, agent_name: str) -> None:
        self.conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            (f"model_versions:{agent_name}",),
        )

    def register(
        self,
        *,
        agent_name: str,
        run_id: str | None,
        uri_onnx: str,
        uri_sb3: str | None,
        manifest: Mapping[str, Any],
        sha256: str,
    ) -> ModelVersion:
        """Register the next version of ``agent_name`` (status ``registered``).

        The version is linked to the agent row of the same name and owner, if one exists.

        Raises:
            ValidationError: empty name or URI, or a sha256 that is not 64 hex digits.
            NotFoundError: ``run_id`` names no run.
            ConflictError: the agent name belongs to another user.
        """
        name = str(agent_name).strip()
        problems = []
        if not name or len(name) > 200:
            problems.append(f"agent name must be 1-200 characters, found {agent_name!r}")
        if not uri_onnx:
            problems.append("uri_onnx is empty")
        if not _SHA256.match(str(sha256)):
            problems.append(f"sha256 must be 64 lowercase hex digits, found {sha256!r}")
        if problems:
            raise ValidationError("cannot register model version: " + "; ".join(problems))
        with self.conn.transaction():
            self._lock(name)
            owner = None
            if run_id is not None:
                found = self.conn.execute(
                    "SELECT owner FROM runs WHERE id = %s", (_uuid(run_id, "run"),)
                ).fetchone()
                if found is None:
                    raise NotFoundError(f"no run {run_id} to register a model version for")
                owner = found[0]
                self.check_agent_owner(name, owner)
            agent = (
                self.conn.execute(
                    "SELECT id::text FROM agents WHERE owner = %s AND name = %s", (owner, name)
                ).fetchone()
                if owner is not None
                else None
            )
            row = self.conn.execute(
                "INSERT INTO model_versions (agent_id, agent_name, run_id, version, uri_onnx, "
                "uri_sb3, manifest, sha256) SELECT %s, %s, %s, "
                "coalesce(max(version), 0) + 1, %s, %s, %s::jsonb, %s "
                "FROM model_versions WHERE agent_name = %s RETURNING id::text, version",
                (
                    None if agent is None else agent[0],
                    name,
                    run_id,
                    uri_onnx,
                    uri_sb3,
                    dumps_json(dict(manifest)),
                    sha256,
                    name,
                ),
            ).fetchone()
            assert row is not None
        log.info(
            "model version registered",
            extra={"model_version_id": row[0], "agent_name": name, "version": row[1],
                   "run_id": run_id},
        )  # fmt: skip
        return self.get(row[0])

    def record_gate(
        self, version_id: str, gate: Mapping[str, Any], *, status: ModelStatus
    ) -> ModelVersion:
        """Store a gate decision that does not promote: ``registered`` (passed, not promoted)
        or ``rejected``.

        Raises:
            ValidationError: ``status`` is not registered or rejected.
            ConflictError: the version is promoted or retired already.
            NotFoundError: no such version.
        """
        status = ModelStatus(status)
        if status not in (ModelStatus.REGISTERED, ModelStatus.REJECTED):
            raise ValidationError(
                f"a gate decision stores status registered or rejected, found {status.value!r}"
            )
        vid = _uuid(version_id)
        row = self.conn.execute(
            "UPDATE model_versions SET gate = %s::jsonb, status = %s "
            "WHERE id = %s AND status IN ('registered', 'rejected') RETURNING 1",
            (dumps_json(dict(gate)), status.value, vid),
        ).fetchone()
        if row is None:
            current = self.get(vid)
            raise ConflictError(
                f"model version {current.label} is {current.status.value}; a gate decision is "
                "recorded only on a registered or rejected version"
            )
        return self.get(vid)

    def promote(
        self,
        version_id: str,
        *,
        promoted_at: datetime,
        gate: Mapping[str, Any] | None = None,
        outbox: Sequence[OutboxItem] = (),
    ) -> tuple[ModelVersion, builtins.list[ModelVersion]]:
        """Promote a version (from any state), retiring the agent's promoted one, in one
        transaction with its outbox events.

        Returns:
            ``(the promoted version, the versions retired)``; promoting the promoted version
            again changes only its gate (when given) and queues nothing.

        Raises:
            NotFoundError: no such version.
        """
        from psycopg.types.json import Jsonb

        vid = _uuid(version_id)
        with self.conn.transaction():
            found = self.conn.execute(
                "SELECT agent_name, status, agent_id::text FROM model_versions WHERE id = %s",
                (vid,),
            ).fetchone()
            if found is None:
                raise NotFoundError(f"no model version {version_id}")
            name, status, agent_id = found
            self._lock(name)
            status = self.conn.execute(
                "SELECT status FROM model_versions WHERE id = %s FOR UPDATE", (vid,)
            ).fetchone()[0]  # type: ignore[index]
            gate_json = None if gate is None else dumps_json(dict(gate))
            if status == ModelStatus.PROMOTED.value:
                self.conn.execute(
                    "UPDATE model_versions SET gate = coalesce(%s::jsonb, gate) WHERE id = %s",
                    (gate_json, vid),
                )
                retired_ids: builtins.list[str] = []
            else:
                retired_ids = [
                    r[0]
                    for r in self.conn.execute(
                        "UPDATE model_versions SET status = 'retired' WHERE agent_name = %s "
                        "AND status = 'promoted' AND id <> %s RETURNING id::text",
                        (name, vid),
                    )
                ]
                self.conn.execute(
                    "UPDATE model_versions SET status = 'promoted', promoted_at = %s, "
                    "gate = coalesce(%s::jsonb, gate) WHERE id = %s",
                    (promoted_at, gate_json, vid),
                )
                if agent_id is not None:
                    self.conn.execute(
                        "UPDATE agents SET model_version_id = %s WHERE id = %s", (vid, agent_id)
                    )
                for item in outbox:
                    stored = self.conn.execute(
                        "INSERT INTO outbox (event_id, topic, ordering_key, payload, attributes) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING "
                        "RETURNING id",
                        (item.event_id, item.topic, item.ordering_key, Jsonb(item.payload),
                         Jsonb(item.attributes)),
                    ).fetchone()  # fmt: skip
                    if stored is None:
                        # ModelPromoted's id is derived from the version id alone, so promoting
                        # a version a second time (a rollback) cannot publish a new event.
                        log.warning(
                            "event already in the outbox; this re-promotion is not published",
                            extra={"event_id": item.event_id, "model_version_id": vid},
                        )
        retired = [self.get(r) for r in retired_ids]
        return self.get(vid), retired
