"""The training job as Cloud Run would start it: the subprocess launcher, same entry point and
env vars, a tiny budget; every outcome lands in the run row and the model registry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytest.importorskip("stable_baselines3")

from jobs.train.main import EXIT_INVALID, EXIT_OK

from stocktrade.adapters.local.launcher import SubprocessJobLauncher
from stocktrade.adapters.local.object_store import LocalObjectStore
from stocktrade.adapters.postgres.bars import PostgresBarRepository
from stocktrade.adapters.postgres.models import PostgresModelRegistry
from stocktrade.adapters.postgres.runs import PostgresRunRepository
from stocktrade.domain.runs import RunStatus
from stocktrade.rl.manifest import verify_files
from stocktrade.services.training import submit_training
from tests.integration.test_backtest_job import write_subset_csv
from tests.integration.test_training_service import REQUEST

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bars_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_subset_csv(tmp_path_factory.mktemp("bars"))


@pytest.fixture
def world(
    db_conn: psycopg.Connection, bars_csv: Path, tmp_path: Path, pg_url: str
) -> dict[str, Any]:
    bars = PostgresBarRepository(db_conn)
    bars.import_csv(bars_csv.read_bytes(), str(bars_csv), source="stocknet")
    store = LocalObjectStore(tmp_path / "objects")
    env = {
        "DATABASE_URL": pg_url,
        "STOCKTRADE_OBJECT_STORE_URL": store.root.as_uri(),
        "STOCKTRADE_DATA_DIR": str(tmp_path),
        "STOCKTRADE_ENV": "test",
        "STOCKTRADE_TORCH_THREADS": "1",
    }
    return {
        "bars": bars,
        "runs": PostgresRunRepository(db_conn),
        "models": PostgresModelRegistry(db_conn),
        "store": store,
        "env": env,
        "launcher": SubprocessJobLauncher(store, env=env),
    }


def test_detached_training_job_trains_registers_and_gates_the_policy(
    world: dict[str, Any],
) -> None:
    runs, store, launcher = world["runs"], world["store"], world["launcher"]
    run = submit_training(
        REQUEST, runs=runs, bars=world["bars"], store=store, models=world["models"],
        launcher=launcher,
    )  # fmt: skip
    assert run.status is RunStatus.QUEUED and (run.execution or "").startswith("train-local-")
    code = launcher.wait(run.execution, timeout=180)
    log = store.get_bytes(f"runs/{run.id}/job.log").decode()
    assert code == EXIT_OK, log

    done = runs.get(run.id)
    assert done.status is RunStatus.SUCCEEDED and done.progress == 1.0 and done.error is None
    assert done.execution == run.execution  # the job saw CLOUD_RUN_EXECUTION
    assert done.metrics is not None and done.metrics["timesteps"] == 256
    version = world["models"].get(done.metrics["model_version_id"])
    assert version.run_id == run.id and version.version == 1
    assert version.gate is not None and version.gate["decision"] in ("promoted", "rejected")
    manifest = json.loads(store.get_bytes(f"runs/{run.id}/manifest.json"))
    verify_files(
        manifest,
        {
            "policy.onnx": store.get_bytes(f"runs/{run.id}/policy.onnx"),
            "policy_sb3.zip": store.get_bytes(f"runs/{run.id}/policy_sb3.zip"),
        },
    )
    # The job pinned torch to STOCKTRADE_TORCH_THREADS (the request left it to the deployment).
    assert manifest["train_config"]["torch_threads"] == 1
    assert "training job finished" in log


def test_job_exits_2_and_fails_the_run_on_a_stored_bad_request(world: dict[str, Any]) -> None:
    runs = world["runs"]
    run = runs.create("train", {**REQUEST, "symbols": ["NOPE"]})
    execution = world["launcher"].launch("train", run.id)
    assert world["launcher"].wait(execution, timeout=120) == EXIT_INVALID
    failed = runs.get(run.id)
    assert failed.status is RunStatus.FAILED and "unknown symbol(s) ['NOPE']" in (
        failed.error or ""
    )


def test_job_without_a_run_id_exits_2(world: dict[str, Any]) -> None:
    env = {k: v for k, v in world["launcher"].environment("train", "x", "e").items()
           if k != "STOCKTRADE_RUN_ID"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "jobs.train.main"], cwd=REPO, env=env, capture_output=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == EXIT_INVALID, done.stderr
    assert b"no run id" in done.stdout + done.stderr
