"""Runs in a real Postgres: legal moves only, exact money, owners see only their runs."""

from __future__ import annotations

import threading
from decimal import Decimal

import psycopg
import pytest

from stocktrade.adapters.postgres.runs import PostgresRunRepository
from stocktrade.domain.runs import TRANSITIONS, RunStatus, can_move
from stocktrade.errors import ConflictError, NotFoundError, ValidationError

pytestmark = pytest.mark.integration

CONFIG = {"strategy": "sma_crossover", "symbols": ["AAPL"], "params": {"fast": 10, "slow": 30}}


@pytest.fixture
def repo(db_conn: psycopg.Connection) -> PostgresRunRepository:
    return PostgresRunRepository(db_conn)


def test_a_run_goes_queued_running_succeeded_with_progress_metrics_and_money(
    repo: PostgresRunRepository,
) -> None:
    run = repo.create("backtest", CONFIG, artifact_prefix="file:///tmp/runs/x/")
    assert (run.status, run.progress, run.owner) == (RunStatus.QUEUED, 0.0, "local")
    assert run.config == CONFIG and run.created_at is not None and run.started_at is None
    running = repo.start(run.id, execution="backtest-abc")
    assert running.status is RunStatus.RUNNING and running.execution == "backtest-abc"
    assert running.started_at is not None and running.heartbeat_at is not None
    assert repo.report_progress(run.id, 0.4, eta_seconds=12.5, message="engine") is False
    mid = repo.get(run.id)
    assert (mid.progress, mid.eta_seconds, mid.message) == (pytest.approx(0.4), 12.5, "engine")
    assert repo.report_progress(run.id, 0.2) is False
    assert repo.get(run.id).progress == pytest.approx(0.4)  # progress never goes backwards
    done = repo.succeed(
        run.id,
        metrics={
            "sharpe": 1.25,
            "sortino": float("inf"),
            "final_equity": Decimal("142978.7558758335"),
        },
        artifacts={"report.html": "file:///tmp/runs/x/report.html"},
        money={
            "initial_cash": Decimal("100000"),
            "final_equity": Decimal("142978.7558758335"),
            "total_fees": Decimal("1697.9867051665"),
        },
    )
    assert done.status is RunStatus.SUCCEEDED and done.progress == 1.0
    assert done.finished_at is not None and done.duration_seconds is not None
    assert done.metrics == {"sharpe": 1.25, "sortino": None, "final_equity": 142978.7558758335}
    assert done.artifacts == {"report.html": "file:///tmp/runs/x/report.html"}
    assert done.final_equity == Decimal("142978.7558758335")
    assert done.total_fees == Decimal("1697.9867051665")
    # jsonb keeps the money digits exactly, too.
    text = repo.conn.execute(
        "SELECT metrics->>'final_equity' FROM runs WHERE id = %s", (run.id,)
    ).fetchone()
    assert text == ("142978.7558758335",)


def test_illegal_moves_raise_conflict_and_change_nothing(repo: PostgresRunRepository) -> None:
    run = repo.create("backtest", CONFIG)
    with pytest.raises(ConflictError, match="is queued; it cannot become succeeded"):
        repo.succeed(run.id, metrics={})
    with pytest.raises(ConflictError, match="progress is recorded only while running"):
        repo.report_progress(run.id, 0.5)
    repo.start(run.id)
    with pytest.raises(ConflictError, match="is running; it cannot become running"):
        repo.start(run.id)
    repo.fail(run.id, "engine exploded")
    before = repo.get(run.id)
    for move in (
        lambda: repo.start(run.id),
        lambda: repo.succeed(run.id),
        lambda: repo.fail(run.id, "again"),
        lambda: repo.mark_cancelled(run.id),
        lambda: repo.request_cancel(run.id),
    ):
        with pytest.raises(ConflictError, match="failed"):
            move()
    assert repo.get(run.id) == before
    assert before.error == "engine exploded" and before.finished_at is not None


def test_the_domain_transition_table_matches_what_the_repository_allows(
    repo: PostgresRunRepository,
) -> None:
    assert not any(TRANSITIONS[s] for s in RunStatus if s.is_terminal)
    assert can_move("queued", "failed") and can_move("running", "cancelled")
    assert not can_move("succeeded", "running") and not can_move("running", "queued")
    queued = repo.create("train", {"agent": "a"})
    assert repo.fail(queued.id, "rejected before any work").status is RunStatus.FAILED


def test_cancelling_a_queued_run_cancels_it_at_once(repo: PostgresRunRepository) -> None:
    run = repo.create("backtest", CONFIG)
    cancelled = repo.request_cancel(run.id)
    assert cancelled.status is RunStatus.CANCELLED and cancelled.finished_at is not None
    with pytest.raises(ConflictError, match="is cancelled"):
        repo.start(run.id)


def test_cancelling_a_running_run_sets_a_flag_its_job_sees(repo: PostgresRunRepository) -> None:
    run = repo.create("backtest", CONFIG)
    repo.start(run.id)
    flagged = repo.request_cancel(run.id)
    assert flagged.status is RunStatus.RUNNING and flagged.cancel_requested
    assert repo.report_progress(run.id, 0.5) is True
    assert repo.heartbeat(run.id) is True
    assert repo.mark_cancelled(run.id).status is RunStatus.CANCELLED
    with pytest.raises(ConflictError, match="already cancelled"):
        repo.request_cancel(run.id)


def test_only_one_of_two_racing_finishers_wins(repo: PostgresRunRepository, pg_url: str) -> None:
    run = repo.create("backtest", CONFIG)
    repo.start(run.id)
    outcomes: list[str] = []

    def finish(how: str) -> None:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            other = PostgresRunRepository(conn)
            try:
                if how == "succeed":
                    other.succeed(run.id, metrics={})
                else:
                    other.fail(run.id, "boom")
                outcomes.append(how)
            except ConflictError:
                outcomes.append("conflict")

    threads = [threading.Thread(target=finish, args=(h,)) for h in ("succeed", "fail") * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("conflict") == 5
    assert repo.get(run.id).status.value in {o for o in outcomes if o != "conflict"} | {
        "succeeded",
        "failed",
    }


def test_owners_see_only_their_own_runs(repo: PostgresRunRepository) -> None:
    mine = repo.create("backtest", CONFIG, owner="alice")
    theirs = repo.create("backtest", CONFIG, owner="bob")
    assert [r.id for r in repo.list(owner="alice")] == [mine.id]
    with pytest.raises(NotFoundError, match="for user 'alice'"):
        repo.get(theirs.id, owner="alice")
    with pytest.raises(NotFoundError):
        repo.request_cancel(theirs.id, owner="alice")
    assert repo.get(theirs.id).status is RunStatus.QUEUED


def test_list_filters_and_orders_newest_first(repo: PostgresRunRepository) -> None:
    ids = [repo.create("backtest", CONFIG).id for _ in range(3)]
    train = repo.create("train", {"agent": "x"})
    repo.start(ids[0])
    assert [r.id for r in repo.list(kind="backtest")] == ids[::-1]
    assert [r.id for r in repo.list(status="running")] == [ids[0]]
    assert repo.list(kind="train")[0].id == train.id
    assert len(repo.list(limit=2)) == 2


def test_ids_resolve_from_unique_prefixes(repo: PostgresRunRepository) -> None:
    run = repo.create("backtest", CONFIG)
    assert repo.resolve(run.id[:8]) == run.id
    assert repo.resolve(run.id.upper()) == run.id
    with pytest.raises(ValidationError, match="at least 4"):
        repo.resolve("ab")
    with pytest.raises(NotFoundError):
        repo.resolve("ffffffff-ffff")
    with pytest.raises(NotFoundError, match="run ids are UUIDs"):
        repo.get("not-a-uuid")


def test_bad_kind_and_duplicate_ids_are_rejected(repo: PostgresRunRepository) -> None:
    with pytest.raises(ValidationError, match="run kind"):
        repo.create("deploy", {})
    run = repo.create("backtest", CONFIG)
    with pytest.raises(ConflictError, match="already exists"):
        repo.create("backtest", CONFIG, run_id=run.id)


def test_stale_running_runs_are_failed_by_the_sweeper(repo: PostgresRunRepository) -> None:
    run = repo.create("backtest", CONFIG)
    fresh = repo.create("backtest", CONFIG)
    repo.start(run.id)
    repo.start(fresh.id)
    repo.conn.execute(
        "UPDATE runs SET heartbeat_at = now() - interval '10 minutes' WHERE id = %s", (run.id,)
    )
    assert repo.fail_stale(300) == [run.id]
    stale = repo.get(run.id)
    assert stale.status is RunStatus.FAILED and "no heartbeat for 300 s" in (stale.error or "")
    assert repo.get(fresh.id).status is RunStatus.RUNNING


def test_a_retried_task_may_restart_its_running_run(repo: PostgresRunRepository) -> None:
    run = repo.create("backtest", CONFIG)
    first = repo.start(run.id, execution="e-1")
    again = repo.start(run.id, execution="e-1", restart=True)
    assert again.status is RunStatus.RUNNING and again.started_at == first.started_at


def test_the_schema_refuses_a_failed_run_without_a_reason(repo: PostgresRunRepository) -> None:
    run = repo.create("backtest", CONFIG)
    with pytest.raises(psycopg.errors.CheckViolation):
        repo.conn.execute(
            "UPDATE runs SET status = 'failed', finished_at = now() WHERE id = %s", (run.id,)
        )
