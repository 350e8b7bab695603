"""The model registry in Postgres: version numbers, ownership, references, promotion."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from stocktrade.adapters.local.object_store import LocalObjectStore
from stocktrade.adapters.postgres.models import PostgresModelRegistry
from stocktrade.adapters.postgres.runs import PostgresRunRepository
from stocktrade.bootstrap import bootstrap
from stocktrade.config import load_settings
from stocktrade.domain.model_versions import ModelStatus
from stocktrade.errors import ConflictError, NotFoundError, ValidationError
from stocktrade.services.promotion import promote_version

pytestmark = pytest.mark.integration


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def reg(db_conn: psycopg.Connection) -> dict[str, Any]:
    return {"models": PostgresModelRegistry(db_conn), "runs": PostgresRunRepository(db_conn)}


def register(reg: dict[str, Any], agent: str, owner: str = "local") -> Any:
    run = reg["runs"].create("train", {"agent": agent}, owner=owner)
    return reg["models"].register(
        agent_name=agent, run_id=run.id, uri_onnx=f"runs/{run.id}/policy.onnx",
        uri_sb3=None, manifest={"seed": 0}, sha256=sha(run.id),
    )  # fmt: skip


def test_versions_count_up_per_agent_name(reg: dict[str, Any]) -> None:
    a1, a2, b1 = register(reg, "a"), register(reg, "a"), register(reg, "b")
    assert (a1.version, a2.version, b1.version) == (1, 2, 1)
    assert a1.status is ModelStatus.REGISTERED and a1.owner == "local"
    assert [v.version for v in reg["models"].list(agent_name="a")] == [2, 1]


def test_an_agent_name_belongs_to_the_user_who_trained_it_first(reg: dict[str, Any]) -> None:
    register(reg, "mine")
    with pytest.raises(ConflictError, match="taken by another user"):
        register(reg, "mine", owner="someone-else")
    assert reg["models"].list(owner="someone-else") == []
    with pytest.raises(NotFoundError):
        reg["models"].resolve("mine:1", owner="someone-else")


def test_references_by_id_prefix_label_and_agent_name(reg: dict[str, Any]) -> None:
    v1, v2 = register(reg, "ref"), register(reg, "ref")
    models = reg["models"]
    assert models.resolve(v1.id) == v1 and models.resolve(v1.id[:8]) == v1
    assert models.resolve("ref:2") == v2
    assert models.resolve("ref") == v2  # newest while none is promoted
    promote_version(v1.id, models=models)
    assert models.resolve("ref").id == v1.id  # the promoted one once there is one
    with pytest.raises(NotFoundError):
        models.resolve("ref:9")
    with pytest.raises(ValidationError, match="agent:3"):
        models.resolve("ref:x")


def test_bad_registrations_are_refused(reg: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="sha256 must be 64"):
        reg["models"].register(agent_name="x", run_id=None, uri_onnx="a", uri_sb3=None,
                               manifest={}, sha256="abc")  # fmt: skip


def test_promotion_without_a_wired_bus_leaves_the_event_in_the_outbox(
    reg: dict[str, Any], db_conn: psycopg.Connection, tmp_path: Path, pg_url: str
) -> None:
    settings = load_settings(database_url=pg_url, data_dir=tmp_path)
    c = bootstrap(settings, db=db_conn, store=LocalObjectStore(tmp_path))
    relay = c.training().relay
    assert relay is None  # nobody in this process listens to the in-process bus
    v1, v2 = register(reg, "quiet"), register(reg, "quiet")
    now = datetime(2026, 1, 2, tzinfo=UTC)
    promote_version(v1.id, models=reg["models"], relay=relay, now=now)
    _, retired = promote_version(v2.id, models=reg["models"], relay=relay, now=now)
    assert [r.id for r in retired] == [v1.id]
    rows = db_conn.execute(
        "SELECT topic, ordering_key, payload->>'model_version_id', published_at FROM outbox "
        "ORDER BY id"
    ).fetchall()
    assert rows == [
        ("model-promoted", "quiet", v1.id, None),
        ("model-promoted", "quiet", v2.id, None),
    ]
    states = {v.version: v.status for v in reg["models"].list(agent_name="quiet")}
    assert states == {1: ModelStatus.RETIRED, 2: ModelStatus.PROMOTED}


def test_a_gate_decision_cannot_overwrite_a_promoted_version(reg: dict[str, Any]) -> None:
    v = register(reg, "g")
    promote_version(v.id, models=reg["models"])
    with pytest.raises(ConflictError, match="is promoted"):
        reg["models"].record_gate(v.id, {"decision": "rejected"}, status=ModelStatus.REJECTED)
