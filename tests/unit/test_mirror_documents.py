"""Mirror documents (schemas.mirror) and the in-memory mirror that follows Firestore's rules."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError as PydanticValidationError

from stocktrade.adapters.local.mirror import InMemoryMirror
from stocktrade.domain.runs import Run, RunKind, RunStatus
from stocktrade.ports import Mirror
from stocktrade.schemas.mirror import (
    AgentEquityDoc,
    LeaderboardDoc,
    LeaderboardRow,
    RunStatusDoc,
    mirror_value,
)

T0 = datetime(2024, 1, 2, 21, 0, tzinfo=UTC)
A, B, C = (uuid.UUID(int=i) for i in (1, 2, 3))


def test_mirror_values_keep_decimals_exact_as_strings_and_times_as_utc_datetimes() -> None:
    from enum import Enum

    class Colour(Enum):
        RED = "red"

    local = datetime(2024, 1, 2, 16, 0, tzinfo=UTC).astimezone()
    value = mirror_value(
        {
            "money": Decimal("100012.3500"),
            "uuid": A,
            "enum": Colour.RED,
            "when": local,
            "nested": ({"q": Decimal("1E+2")},),
            "tags": {"b", "a"},
            "nan": float("nan"),
            1: "int key",
        }
    )
    assert value == {
        "money": "100012.3500",
        "uuid": str(A),
        "enum": "red",
        "when": local,
        "nested": [{"q": "100"}],
        "tags": ["a", "b"],
        "nan": None,
        "1": "int key",
    }
    assert value["when"].tzinfo is UTC
    with pytest.raises(TypeError, match="timezone-aware"):
        mirror_value(datetime(2024, 1, 2))
    with pytest.raises(TypeError, match="cannot store a bytes"):
        mirror_value(b"raw")


def test_agent_document_lives_at_agents_slash_agent_id_with_its_owner() -> None:
    doc = AgentEquityDoc(
        agent_id=A, owner="user-1", equity=Decimal("10000.5"), cash=Decimal(10000), updated_at=T0
    )

    assert doc.path == ("agents", str(A))
    data = doc.to_document()
    assert (data["equity"], data["cash"], data["owner"]) == ("10000.5", "10000", "user-1")
    assert data["positions"] == [] and data["last_decision"] is None
    with pytest.raises(PydanticValidationError):
        AgentEquityDoc(
            agent_id=A,
            owner="u",
            equity=Decimal(1),
            cash=Decimal(1),
            updated_at=datetime(2024, 1, 2),
        )  # naive time


def test_run_document_is_built_from_a_stored_run() -> None:
    run = Run(
        id="r-1",
        owner="user-1",
        kind=RunKind.TRAIN,
        status=RunStatus.RUNNING,
        progress=0.25,
        eta_seconds=30.0,
        message="step 256/1024",
        created_at=T0,
        started_at=T0 + timedelta(seconds=5),
        heartbeat_at=T0 + timedelta(seconds=40),
    )

    doc = RunStatusDoc.from_run(run)

    assert doc.path == ("runs", "r-1")
    assert (doc.kind, doc.status, doc.progress) == ("train", "running", 0.25)
    assert doc.updated_at == T0 + timedelta(seconds=40)  # the latest thing the run did


def test_leaderboard_ranks_by_return_then_equity_then_id() -> None:
    entries: list[dict[str, Any]] = [
        {"agent_id": C, "name": "c", "equity": "10500", "initial_cash": "10000"},
        {"agent_id": A, "name": "a", "equity": "21000", "initial_cash": "20000"},
        {"agent_id": B, "name": "b", "equity": "12000", "initial_cash": "10000"},
    ]

    board = LeaderboardDoc.rank(entries, updated_at=T0, limit=2)

    assert board.path == ("leaderboard", "current")
    assert [(r.rank, r.name) for r in board.rows] == [(1, "b"), (2, "a")]  # a ties c, more equity
    assert board.rows[0].total_return == pytest.approx(0.2)
    with pytest.raises(PydanticValidationError, match=r"ranked 1\.\.1"):
        LeaderboardDoc(
            rows=(
                LeaderboardRow(
                    rank=2,
                    agent_id=A,
                    name="a",
                    equity=Decimal(1),
                    initial_cash=Decimal(1),
                    total_return=0.0,
                ),
            ),
            updated_at=T0,
        )


def test_in_memory_mirror_drops_a_write_older_than_the_stored_document() -> None:
    mirror: Mirror = InMemoryMirror()  # mypy checks it fits the port
    assert isinstance(mirror, InMemoryMirror)
    newer = {"equity": Decimal(2), "updated_at": T0 + timedelta(minutes=1)}

    mirror.write("agents", "a", newer)
    mirror.write("agents", "a", {"equity": Decimal(1), "updated_at": T0})
    mirror.write("agents", "a", {"equity": Decimal(3), "updated_at": T0 + timedelta(minutes=1)})

    assert mirror.get("agents", "a") == {"equity": "3", "updated_at": T0 + timedelta(minutes=1)}
    assert mirror.stale_drops == 1


def test_in_memory_mirror_swallows_an_unstorable_document_unless_strict(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    mirror = InMemoryMirror()

    mirror.write("agents", "a", {"blob": object()})

    assert mirror.failures == 1 and mirror.get("agents", "a") is None
    assert any("mirror write failed" in r.getMessage() for r in caplog.records)
    with pytest.raises(TypeError):
        InMemoryMirror(strict=True).write("agents", "a", {"blob": object()})
