"""Documents of the realtime mirror (Firestore) that the frontend reads.

Three kinds, each written whole after the database commit that changed it, never read back
by the system (Postgres is the source of truth):

=============================  ==========================  ===================================
path                           model                       written when
=============================  ==========================  ===================================
``agents/{agent_id}``          :class:`AgentEquityDoc`     a fill or bar changes an agent's book
``runs/{run_id}``              :class:`RunStatusDoc`       a run starts, reports progress, ends
``leaderboard/current``        :class:`LeaderboardDoc`     equities change (ranked rows)
=============================  ==========================  ===================================

Usage from a handler (``ctx.mirror`` applies the write only after the commit)::

    doc = AgentEquityDoc(agent_id=..., owner=..., equity=..., cash=..., updated_at=bar.ts)
    ctx.mirror.write(doc.COLLECTION, doc.doc_id, doc.to_document())

Value rules (:func:`mirror_value`), shared by every mirror adapter: money and quantities are
exact decimal *strings* (``"100012.35"``, as on the event wire: Firestore has no decimal
type and a double would round), datetimes stay datetimes (Firestore timestamps, aware UTC),
UUIDs and enums become their text, tuples and sets become lists. ``updated_at`` orders the
writes: a mirror drops a write older than the stored document. ``agents`` and ``runs``
documents carry ``owner`` so security rules can show each user only their own; the
leaderboard, readable by all, names agents but not their owners.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from stocktrade.domain.runs import Run

__all__ = [
    "AGENTS",
    "LEADERBOARD",
    "LEADERBOARD_DOC_ID",
    "RUNS",
    "UPDATED_AT",
    "AgentEquityDoc",
    "DecisionSummary",
    "LeaderboardDoc",
    "LeaderboardRow",
    "MirrorDocument",
    "PositionSummary",
    "RunStatusDoc",
    "mirror_value",
]

AGENTS = "agents"
RUNS = "runs"
LEADERBOARD = "leaderboard"
LEADERBOARD_DOC_ID = "current"
#: The field that orders writes of one document (older writes are dropped).
UPDATED_AT = "updated_at"


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
Money = Annotated[Decimal, Field(allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


def mirror_value(value: Any) -> Any:
    """``value`` as a mirror (Firestore) value; see the module docstring for the rules.

    Raises:
        TypeError: a value no mirror can store (bytes, arbitrary objects).
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        # Firestore stores NaN, but JSON readers of the mirror choke on it.
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return format(value, "f") if value.is_finite() else None
    if isinstance(value, Enum):
        return mirror_value(value.value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError(f"mirror datetimes must be timezone-aware, found {value.isoformat()}")
        return value.astimezone(UTC)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, BaseModel):
        return mirror_value(value.model_dump(mode="python"))
    if isinstance(value, Mapping):
        return {str(k): mirror_value(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((mirror_value(v) for v in value), key=str)
    if isinstance(value, list | tuple):
        return [mirror_value(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars from metrics
        return mirror_value(value.item())
    raise TypeError(f"a mirror cannot store a {type(value).__name__}: {value!r:.80}")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MirrorDocument(_Model):
    """Base of the mirror documents: a collection, a document id and ``updated_at``."""

    COLLECTION: ClassVar[str]

    updated_at: UtcDatetime

    @property
    def doc_id(self) -> str:
        """The document id inside :attr:`COLLECTION`."""
        raise NotImplementedError

    @property
    def path(self) -> tuple[str, str]:
        """``(collection, doc_id)``, the arguments of ``Mirror.write`` before the data."""
        return self.COLLECTION, self.doc_id

    def to_document(self) -> dict[str, Any]:
        """The document to write (mirror values only)."""
        data = mirror_value(self.model_dump(mode="python"))
        assert isinstance(data, dict)
        return data


# -- agents/{agent_id} ----------------------------------------------------------------------
class PositionSummary(_Model):
    """One holding of an agent."""

    symbol: str
    qty: Money
    avg_price: Money | None = None
    market_value: Money | None = None


class DecisionSummary(_Model):
    """What the agent decided last (for the "why" line in the UI)."""

    symbol: str
    bar_ts: UtcDatetime
    action: Literal["hold", "buy", "sell"]
    confidence: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    target_fraction: Money | None = None
    client_order_id: str | None = None
    model_version_id: uuid.UUID | None = None
    reason: str = ""


class AgentEquityDoc(MirrorDocument):
    """``agents/{agent_id}``: an agent's live book."""

    COLLECTION: ClassVar[str] = AGENTS

    agent_id: uuid.UUID
    owner: str
    name: str = ""
    status: str | None = None
    equity: Money
    cash: Money
    positions: tuple[PositionSummary, ...] = ()
    last_decision: DecisionSummary | None = None

    @property
    def doc_id(self) -> str:
        return str(self.agent_id)


# -- runs/{run_id} --------------------------------------------------------------------------
class RunStatusDoc(MirrorDocument):
    """``runs/{run_id}``: a training or backtest run's status and progress."""

    COLLECTION: ClassVar[str] = RUNS

    run_id: str
    owner: str
    kind: Literal["train", "backtest"]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: Fraction = 0.0
    eta_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    message: str | None = None
    error: str | None = None
    metrics: dict[str, Any] | None = None
    cancel_requested: bool = False
    created_at: UtcDatetime | None = None
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None

    @property
    def doc_id(self) -> str:
        return self.run_id

    @classmethod
    def from_run(cls, run: Run, *, updated_at: datetime | None = None) -> RunStatusDoc:
        """The document of a stored run; ``updated_at`` defaults to its latest timestamp."""
        stamps = [
            t
            for t in (run.finished_at, run.heartbeat_at, run.started_at, run.created_at)
            if t is not None
        ]
        when = updated_at or (max(stamps) if stamps else datetime.now(UTC))
        return cls(
            run_id=run.id,
            owner=run.owner,
            kind=run.kind.value,  # type: ignore[arg-type]
            status=run.status.value,  # type: ignore[arg-type]
            progress=min(max(run.progress, 0.0), 1.0),
            eta_seconds=run.eta_seconds,
            message=run.message,
            error=run.error,
            metrics=run.metrics,
            cancel_requested=run.cancel_requested,
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            updated_at=when,
        )


# -- leaderboard/current --------------------------------------------------------------------
class LeaderboardRow(_Model):
    """One ranked agent. ``total_return`` is ``equity / initial_cash - 1``.

    No owner: the leaderboard is readable by every user, and user ids are nobody else's
    business (the UI marks the reader's own agents by their ids).
    """

    rank: Annotated[int, Field(ge=1)]
    agent_id: uuid.UUID
    name: str
    equity: Money
    initial_cash: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
    total_return: Annotated[float, Field(allow_inf_nan=False)]


class LeaderboardDoc(MirrorDocument):
    """``leaderboard/current``: agents ranked by total return (best first).

    Build it with :meth:`rank`; rows must be ranked 1, 2, 3, ... in order.
    """

    COLLECTION: ClassVar[str] = LEADERBOARD

    rows: tuple[LeaderboardRow, ...] = ()

    @property
    def doc_id(self) -> str:
        return LEADERBOARD_DOC_ID

    @model_validator(mode="after")
    def _ranked(self) -> LeaderboardDoc:
        ranks = [row.rank for row in self.rows]
        if ranks != list(range(1, len(ranks) + 1)):
            raise ValueError(
                f"leaderboard rows must be ranked 1..{len(ranks)} in order, "
                f"found ranks {ranks[:10]}"
            )
        return self

    @classmethod
    def rank(
        cls,
        entries: Iterable[Mapping[str, Any]],
        *,
        updated_at: datetime,
        limit: int = 100,
    ) -> LeaderboardDoc:
        """Rank agents by total return, then equity, then id (a stable order).

        Args:
            entries: mappings with ``agent_id``, ``name``, ``equity`` and ``initial_cash``.
            updated_at: when the equities were marked.
            limit: keep the best ``limit`` rows.
        """
        scored = []
        for entry in entries:
            equity = Decimal(entry["equity"])
            initial = Decimal(entry["initial_cash"])
            if initial <= 0:
                raise ValueError(
                    f"agent {entry['agent_id']}: initial_cash must be > 0, found {initial}"
                )
            scored.append((float(equity / initial - 1), equity, str(entry["agent_id"]), entry))
        scored.sort(key=lambda s: (-s[0], -s[1], s[2]))
        rows = tuple(
            LeaderboardRow(
                rank=i,
                agent_id=entry["agent_id"],
                name=entry["name"],
                equity=equity,
                initial_cash=entry["initial_cash"],
                total_return=ret,
            )
            for i, (ret, equity, _, entry) in enumerate(scored[:limit], start=1)
        )
        return cls(rows=rows, updated_at=updated_at)
