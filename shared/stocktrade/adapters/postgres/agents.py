"""Agents in Postgres: the ``agents`` row, its paper books, positions, deposit, leaderboard.

Implements :class:`stocktrade.services.agents.AgentStore`. Parsing an agents row into an
:class:`~stocktrade.services.agents.AgentConfig` lives here too (:func:`agent_from_row`),
shared with the chain store, and is cached by row content (parsing validates costs and
limits, which the chain would otherwise repeat for every bar).
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from psycopg.types.json import Jsonb

from stocktrade.domain.costs import CostModel
from stocktrade.domain.risk import RiskLimits
from stocktrade.errors import ConflictError, NotFoundError, ValidationError
from stocktrade.services.agents import AgentConfig, AgentSpec, ModelRef

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "AGENT_COLUMNS",
    "AGENT_JOIN",
    "AGENT_VERSION",
    "PostgresAgentStore",
    "agent_from_row",
    "agents_by_version",
    "model_from_row",
]

#: Columns :func:`agent_from_row` reads (agents ``a`` left-joined with model_versions ``m``).
AGENT_COLUMNS = (
    "a.id, a.owner, a.name, a.kind, a.strategy, a.params, a.symbols, a.timeframe, a.status, "
    "a.risk, a.costs, a.initial_cash, m.id, m.agent_name, m.version, m.uri_onnx, m.sha256, "
    "m.manifest, m.status"
)
AGENT_JOIN = "agents a LEFT JOIN model_versions m ON m.id = a.model_version_id"
N_AGENT_COLUMNS = 19

#: An agent row's version: its id and the transaction that last wrote it (``xmin``). Hot
#: queries read only this and take the parsed agent from :func:`agents_by_version`'s cache.
AGENT_VERSION = "a.id, a.xmin::text::bigint, a.model_version_id"

_MODEL_COLUMNS = "id, agent_name, version, uri_onnx, sha256, manifest, status"
_parsed: dict[str, AgentConfig] = {}
_by_version: dict[tuple[UUID, int, UUID | None], AgentConfig] = {}


def model_from_row(row: Sequence[Any]) -> ModelRef:
    """A :class:`ModelRef` from ``id, agent_name, version, uri_onnx, sha256, manifest, status``."""
    return ModelRef(
        id=row[0],
        agent_name=row[1],
        version=int(row[2]),
        uri_onnx=row[3],
        sha256=row[4],
        manifest=row[5] or {},
        status=row[6],
    )


def agent_from_row(row: Sequence[Any]) -> AgentConfig:
    """An :class:`AgentConfig` from the :data:`AGENT_COLUMNS` of one row (cached by content).

    Raises:
        ValidationError: the stored costs or limits are invalid.
    """
    # The manifest is immutable per model version id (row[12]): leave it out of the key.
    key = repr((*row[:17], row[18]))
    cached = _parsed.get(key)
    if cached is not None:
        return cached
    model = None if row[12] is None else model_from_row(row[12:19])
    agent = AgentConfig(
        id=row[0],
        owner=row[1],
        name=row[2],
        kind=row[3],
        strategy=row[4],
        params=dict(row[5] or {}),
        symbols=tuple(row[6]),
        timeframe=row[7],
        status=row[8],
        risk=RiskLimits.from_dict(dict(row[9] or {})),
        costs=CostModel.from_dict(dict(row[10] or {})),
        initial_cash=Decimal(row[11]),
        model=model,
    )
    if len(_parsed) > 50_000:
        _parsed.clear()
    _parsed[key] = agent
    return agent


def agents_by_version(
    conn: psycopg.Connection, versions: Sequence[tuple[UUID, int, UUID | None]]
) -> dict[UUID, AgentConfig]:
    """Agents for ``(id, xmin, model version id)`` triples, parsed once per row version.

    An agent row rewritten (status, model version, limits) gets a new ``xmin`` and is read
    again; model versions are immutable in what the chain uses (file, hash, manifest).
    """
    out: dict[UUID, AgentConfig] = {}
    missing = []
    for version in versions:
        agent = _by_version.get(version)
        if agent is None:
            missing.append(version)
        else:
            out[version[0]] = agent
    if missing:
        rows = conn.execute(
            f"SELECT {AGENT_COLUMNS}, a.xmin::text::bigint FROM {AGENT_JOIN} "
            "WHERE a.id = ANY(%s::uuid[])",
            ([m[0] for m in missing],),
        ).fetchall()
        if len(_by_version) > 100_000:
            _by_version.clear()
        for r in rows:
            agent = agent_from_row(r[:N_AGENT_COLUMNS])
            _by_version[(r[0], int(r[N_AGENT_COLUMNS]), agent.model_version_id)] = agent
            out[r[0]] = agent
    return out


class PostgresAgentStore:
    """:class:`~stocktrade.services.agents.AgentStore` on one psycopg connection."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def insert(
        self, spec: AgentSpec, strategy: str, books: Sequence[tuple[str, Decimal]]
    ) -> AgentConfig:
        import psycopg

        cash = Decimal(str(spec.initial_cash))
        try:
            with self.conn.transaction():
                self.conn.execute(
                    "INSERT INTO users (id) VALUES (%s) ON CONFLICT DO NOTHING", (spec.owner,)
                )
                row = self.conn.execute(
                    "INSERT INTO agents (owner, name, kind, strategy, params, symbols, timeframe, "
                    "model_version_id, risk, costs, initial_cash) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    (
                        spec.owner,
                        spec.name,
                        spec.kind,
                        strategy,
                        Jsonb(dict(spec.params)),
                        list(spec.symbols),
                        spec.timeframe,
                        spec.model_version_id,
                        Jsonb(RiskLimits.from_dict(dict(spec.risk)).to_dict()),
                        Jsonb(CostModel.from_dict(dict(spec.costs)).to_dict()),
                        cash,
                    ),
                ).fetchone()
                assert row is not None
                agent_id = row[0]
                with self.conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO chain_books (agent_id, symbol, timeframe, initial_cash, cash) "
                        "VALUES (%s, %s, %s, %s, %s)",
                        [(agent_id, s, spec.timeframe, c, c) for s, c in books],
                    )
                    cur.executemany(
                        "INSERT INTO positions (agent_id, symbol) VALUES (%s, %s)",
                        [(agent_id, s) for s, _c in books],
                    )
                self.conn.execute(
                    "INSERT INTO cash_ledger (agent_id, ts, amount, balance, kind, ref) "
                    "VALUES (%s, now(), %s, %s, 'deposit', 'initial')",
                    (agent_id, cash, cash),
                )
                self.conn.execute(
                    "INSERT INTO leaderboard (agent_id, trades, equity) VALUES (%s, 0, %s)",
                    (agent_id, cash),
                )
        except psycopg.errors.UniqueViolation as exc:
            raise ConflictError(
                f"owner {spec.owner!r} already has an agent named {spec.name!r}"
            ) from exc
        except psycopg.errors.ForeignKeyViolation as exc:
            raise NotFoundError(f"model version {spec.model_version_id} does not exist") from exc
        return self.get(agent_id)

    def _one(self, where: str, params: Sequence[Any]) -> list[AgentConfig]:
        rows = self.conn.execute(
            f"SELECT {AGENT_COLUMNS} FROM {AGENT_JOIN} WHERE {where} ORDER BY a.created_at, a.name",
            params,
        ).fetchall()
        return [agent_from_row(r) for r in rows]

    def get(self, agent: str | UUID, *, owner: str | None = None) -> AgentConfig:
        """An agent by id or name (names are per owner: give ``owner`` when ambiguous).

        Raises:
            NotFoundError: no such agent (or it belongs to another owner).
            ValidationError: a name several owners use, without ``owner``.
        """
        agent_id: UUID | None = agent if isinstance(agent, UUID) else None
        if agent_id is None:
            try:
                agent_id = UUID(str(agent))
            except ValueError:
                agent_id = None
        if agent_id is not None:
            found = self._one("a.id = %s", (agent_id,))
        else:
            found = self._one(
                "a.name = %s AND (%s::text IS NULL OR a.owner = %s)", (str(agent), owner, owner)
            )
        if owner is not None:
            found = [a for a in found if a.owner == owner]
        if not found:
            raise NotFoundError(f"no agent {agent!s}" + (f" of owner {owner!r}" if owner else ""))
        if len(found) > 1:
            raise ValidationError(
                f"agent name {agent!s} is used by owners {[a.owner for a in found]}; give the id"
            )
        return found[0]

    def list(self, *, owner: str | None = None) -> list[AgentConfig]:
        return self._one("%s::text IS NULL OR a.owner = %s", (owner, owner))

    def model_version(self, model_version_id: UUID) -> ModelRef:
        row = self.conn.execute(
            f"SELECT {_MODEL_COLUMNS} FROM model_versions WHERE id = %s", (model_version_id,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no model version {model_version_id}")
        return model_from_row(row)

    def promoted_version(self, agent_name: str) -> ModelRef | None:
        row = self.conn.execute(
            f"SELECT {_MODEL_COLUMNS} FROM model_versions WHERE agent_name = %s "
            "AND status = 'promoted'",
            (agent_name,),
        ).fetchone()
        return None if row is None else model_from_row(row)

    def promoted_versions(self) -> builtins.list[ModelRef]:
        """Every promoted model version, newest first."""
        rows = self.conn.execute(
            f"SELECT {_MODEL_COLUMNS} FROM model_versions WHERE status = 'promoted' "
            "ORDER BY promoted_at DESC NULLS LAST, created_at DESC"
        ).fetchall()
        return [model_from_row(r) for r in rows]

    def latest_version(self, agent_name: str) -> ModelRef | None:
        """The newest model version trained for ``agent_name`` (any status), if any."""
        row = self.conn.execute(
            f"SELECT {_MODEL_COLUMNS} FROM model_versions WHERE agent_name = %s "
            "ORDER BY version DESC LIMIT 1",
            (agent_name,),
        ).fetchone()
        return model_from_row(row) if row else None

    def set_status(self, agent_id: UUID, status: str) -> None:
        """Pause, resume or retire an agent."""
        if status not in ("active", "paused", "retired"):
            raise ValidationError(f"status must be active, paused or retired, found {status!r}")
        self.conn.execute("UPDATE agents SET status = %s WHERE id = %s", (status, agent_id))


def jsonable(value: Mapping[str, Any]) -> dict[str, Any]:
    """A dict made JSON-safe (Decimals and UUIDs as strings)."""
    return json.loads(json.dumps(value, default=str))
