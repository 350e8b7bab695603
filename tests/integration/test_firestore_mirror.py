"""The Firestore mirror against the real Firestore emulator (``gcloud emulators firestore``).

The emulator starts once for this module on a free loopback port and is killed (with its Java
child) at the end; tests skip with the reason when gcloud, its emulator component or Java is
missing, or it does not come up within 40 s. Each test writes under its own project id, so
tests never see each other's documents. Documents go in through :class:`FirestoreMirror` and
are read back with a plain ``google.cloud.firestore`` client.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from stocktrade.adapters.gcp.firestore_mirror import FirestoreMirror
from stocktrade.ports import Mirror
from stocktrade.schemas.mirror import (
    AgentEquityDoc,
    DecisionSummary,
    LeaderboardDoc,
    PositionSummary,
    RunStatusDoc,
)

T0 = datetime(2024, 1, 2, 21, 0, tzinfo=UTC)
AGENT = uuid.UUID("7b0c5a52-3b1f-4f7e-9a57-0d6a4c1f2e01")
OTHER = uuid.UUID("0d2f0f4e-8a6b-4c3e-9a1d-5b7e6c9d8f02")


# -- the emulator ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _emulator_problem() -> str | None:
    if shutil.which("gcloud") is None:
        return "the Google Cloud CLI (gcloud) is not installed"
    try:
        out = subprocess.run(["gcloud", "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`gcloud --version` failed: {exc}"
    if out.returncode != 0:
        return f"`gcloud --version` exited {out.returncode}: {out.stderr.strip()[:200]}"
    if "cloud-firestore-emulator" not in out.stdout:
        return "the gcloud cloud-firestore-emulator component is not installed"
    if shutil.which("java") is None:
        return "java (needed by the Firestore emulator) is not installed"
    return None


def _ready(host: str) -> bool:
    # The emulator answers "Ok" on its root once it serves requests.
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            f"http://{host}/", timeout=1
        ) as resp:
            return resp.status == 200
    except OSError:
        return False


@dataclass
class Emulator:
    host: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def new_project(self) -> str:
        return f"test-{uuid.uuid4().hex[:12]}"

    def client(self, project: str) -> Any:
        """A plain Firestore client on the emulator (what the frontend's reads see)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import firestore

        client = firestore.Client(project=project, credentials=AnonymousCredentials())
        client._emulator_host = self.host  # as FIRESTORE_EMULATOR_HOST would set it
        return client

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    problem = _emulator_problem()
    if problem:
        pytest.skip(f"Firestore emulator unavailable: {problem}")
    port = _free_port()
    log_path = Path(tempfile.mkstemp(prefix="firestore-emulator-", suffix=".log")[1])
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                "gcloud",
                "emulators",
                "firestore",
                "start",
                f"--host-port=127.0.0.1:{port}",
                "--quiet",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    emu = Emulator(f"127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + 40
    while not _ready(emu.host):
        if process.poll() is not None or time.monotonic() > deadline:
            emu.stop()
            tail = log_path.read_text(errors="replace")[-500:]
            pytest.skip(f"Firestore emulator did not come up in 40 s: {tail}")
        time.sleep(0.2)
    try:
        yield emu
    finally:
        emu.stop()
        log_path.unlink(missing_ok=True)


def agent_doc(equity: str, at: datetime, **kw: Any) -> AgentEquityDoc:
    return AgentEquityDoc(
        agent_id=AGENT,
        owner="user-1",
        name="sma-aapl",
        status="active",
        equity=Decimal(equity),
        cash=Decimal("8125.70"),
        positions=(
            PositionSummary(
                symbol="AAPL",
                qty=Decimal(10),
                avg_price=Decimal("187.43"),
                market_value=Decimal("1880.20"),
            ),
        ),
        last_decision=DecisionSummary(
            symbol="AAPL",
            bar_ts=at - timedelta(minutes=1),
            action="buy",
            confidence=0.71,
            client_order_id="st-agent7-AAPL-20240102T1430",
        ),
        updated_at=at,
        **kw,
    )


# -- writes read back -----------------------------------------------------------------------
def test_agent_run_and_leaderboard_documents_read_back_exactly(emulator: Emulator) -> None:
    project = emulator.new_project()
    mirror: Mirror = FirestoreMirror(project, emulator_host=emulator.host)  # mypy: fits the port
    assert isinstance(mirror, FirestoreMirror)
    run = RunStatusDoc(
        run_id="9d1c7a4e-0000-4000-8000-000000000001",
        owner="user-1",
        kind="backtest",
        status="running",
        progress=0.42,
        eta_seconds=12.5,
        message="bar 420/1000",
        updated_at=T0,
    )
    board = LeaderboardDoc.rank(
        [
            {"agent_id": AGENT, "name": "sma-aapl", "equity": "10005.90", "initial_cash": "10000"},
            {"agent_id": OTHER, "name": "ppo-msft", "equity": "10210.00", "initial_cash": "10000"},
        ],
        updated_at=T0,
    )

    for doc in (agent_doc("10005.90", T0), run, board):
        mirror.write(*doc.path, doc.to_document())

    db = emulator.client(project)
    agent = db.collection("agents").document(str(AGENT)).get().to_dict()
    assert agent["equity"] == "10005.90" and agent["cash"] == "8125.70"  # exact decimals
    assert agent["owner"] == "user-1" and agent["agent_id"] == str(AGENT)
    assert agent["updated_at"] == T0  # a Firestore timestamp, aware UTC
    assert agent["positions"] == [
        {"symbol": "AAPL", "qty": "10", "avg_price": "187.43", "market_value": "1880.20"}
    ]
    assert agent["last_decision"]["action"] == "buy"
    assert agent["last_decision"]["bar_ts"] == T0 - timedelta(minutes=1)
    stored_run = db.collection("runs").document(run.run_id).get().to_dict()
    assert (stored_run["status"], stored_run["progress"]) == ("running", 0.42)
    assert stored_run["message"] == "bar 420/1000"
    rows = db.collection("leaderboard").document("current").get().to_dict()["rows"]
    assert [(r["rank"], r["name"]) for r in rows] == [(1, "ppo-msft"), (2, "sma-aapl")]
    assert rows[0]["total_return"] == pytest.approx(0.021)
    assert "owner" not in rows[0]
    assert mirror.failures == 0
    mirror.close()


def test_the_mirror_honours_FIRESTORE_EMULATOR_HOST(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator.host)
    project = emulator.new_project()
    mirror = FirestoreMirror(project)  # no emulator_host: the client reads the variable

    mirror.write("runs", "r1", {"status": "queued", "updated_at": T0})

    assert emulator.client(project).collection("runs").document("r1").get().to_dict() == {
        "status": "queued",
        "updated_at": T0,
    }
    assert mirror.failures == 0


def test_each_write_replaces_the_whole_document(emulator: Emulator) -> None:
    project = emulator.new_project()
    mirror = FirestoreMirror(project, emulator_host=emulator.host)

    mirror.write("runs", "r1", {"status": "failed", "error": "boom", "updated_at": T0})
    mirror.write("runs", "r1", {"status": "running", "updated_at": T0 + timedelta(seconds=1)})

    doc = emulator.client(project).collection("runs").document("r1").get().to_dict()
    assert doc == {"status": "running", "updated_at": T0 + timedelta(seconds=1)}


def test_a_late_older_write_never_regresses_the_document(emulator: Emulator) -> None:
    project = emulator.new_project()
    mirror = FirestoreMirror(project, emulator_host=emulator.host)
    newer, older = agent_doc("10100.00", T0 + timedelta(minutes=1)), agent_doc("10000.00", T0)

    mirror.write(*newer.path, newer.to_document())
    mirror.write(*older.path, older.to_document())

    doc = emulator.client(project).collection("agents").document(str(AGENT)).get().to_dict()
    assert doc["equity"] == "10100.00"
    assert (mirror.stale_drops, mirror.failures) == (1, 0)


def test_delete_removes_a_document_and_deleting_a_missing_one_is_fine(emulator: Emulator) -> None:
    project = emulator.new_project()
    mirror = FirestoreMirror(project, emulator_host=emulator.host)
    mirror.write("agents", "a1", {"equity": "1", "updated_at": T0})

    mirror.delete("agents", "a1")
    mirror.delete("agents", "never-written")

    assert not emulator.client(project).collection("agents").document("a1").get().exists
    assert mirror.failures == 0


# -- failures are swallowed (no emulator needed) ----------------------------------------------
def _closed_port_host() -> str:
    return f"127.0.0.1:{_free_port()}"  # nobody listens there


def test_an_unreachable_firestore_is_logged_and_swallowed_within_its_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("google.cloud.firestore", reason="google-cloud-firestore not installed")
    mirror = FirestoreMirror("p", emulator_host=_closed_port_host(), timeout=0.5)
    caplog.set_level(logging.WARNING)

    started = time.monotonic()
    mirror.write("agents", "a1", {"equity": Decimal("1"), "updated_at": T0})
    mirror.delete("agents", "a1")
    elapsed = time.monotonic() - started

    assert mirror.failures == 2
    assert elapsed < 10  # bounded: about 2 x timeout per call, not the client's 60 s default
    failed = [r for r in caplog.records if "failed; the next write repairs it" in r.getMessage()]
    assert [r.__dict__["collection"] for r in failed] == ["agents", "agents"]


def test_a_value_firestore_cannot_store_is_logged_and_swallowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mirror = FirestoreMirror("p", emulator_host=_closed_port_host(), timeout=0.5)
    caplog.set_level(logging.WARNING)

    mirror.write("agents", "a1", {"blob": object(), "updated_at": T0})

    assert mirror.failures == 1
    assert "a mirror cannot store a object" in caplog.records[-1].__dict__["error"]


def test_importing_the_firestore_mirror_imports_no_google_client() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-c",
            "import stocktrade.adapters.gcp.firestore_mirror, stocktrade.adapters.local.mirror",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "stocktrade.adapters.gcp.firestore_mirror" in modules
    assert not [m for m in modules if m == "google.cloud" or m.startswith("google.cloud.")]
