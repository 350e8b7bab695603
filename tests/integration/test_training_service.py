"""The training use case end to end: real Postgres, real bars, real PPO, a local object store.

Budgets are tiny (256 env steps, one hidden layer of 16): the point is the run's life, its
artifacts, the registry and the gate, not a good policy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("onnxruntime")

from stocktrade.adapters.inference.onnx_runtime import OnnxPolicyRuntime
from stocktrade.adapters.local.object_store import LocalObjectStore
from stocktrade.backtest.engine import run_backtest
from stocktrade.bootstrap import Container, bootstrap
from stocktrade.config import load_settings
from stocktrade.domain.model_versions import ModelStatus
from stocktrade.domain.runs import RunStatus
from stocktrade.errors import ValidationError
from stocktrade.rl.manifest import verify_files
from stocktrade.rl.pipeline import policy_strategy
from stocktrade.schemas.events import Event, ModelPromoted
from stocktrade.services.backtest_runs import build_strategy
from stocktrade.services.promotion import backtest_config_for, evaluate_window, promote_version
from stocktrade.services.training import (
    TrainingProgress,
    execute_training_run,
    run_training_now,
    submit_training,
)
from tests.integration.test_backtest_job import write_subset_csv

pytestmark = pytest.mark.integration

TINY_PPO = {
    "total_timesteps": 256,
    "n_envs": 2,
    "n_steps": 64,
    "batch_size": 64,
    "n_epochs": 2,
    "net_arch": [16],
    "seed": 0,
    "torch_threads": 1,
}
REQUEST: dict[str, Any] = {
    "agent": "tiny",
    "symbols": ["AAPL"],
    "train_start": "2013-01-01",
    "train_end": "2014-12-31",
    "val_start": "2015-01-01",
    "val_end": "2015-12-31",
    "env": {"random_start": True, "episode_length": 32, "commission_bps": 5},
    "ppo": TINY_PPO,
    "parity_observations": 200,
}


@pytest.fixture(scope="module")
def bars_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_subset_csv(tmp_path_factory.mktemp("bars"))


@pytest.fixture
def world(
    db_conn: psycopg.Connection, bars_csv: Path, tmp_path: Path, pg_url: str
) -> dict[str, Any]:
    settings = load_settings(database_url=pg_url, data_dir=tmp_path, torch_threads=1)
    store = LocalObjectStore(tmp_path / "objects")
    container = bootstrap(settings, db=db_conn, store=store)
    container.bars().import_csv(bars_csv.read_bytes(), str(bars_csv), source="stocknet")
    promoted: list[Event] = []
    container.bus().subscribe("model-promoted", promoted.append, name="test")
    return {"c": container, "store": store, "promoted": promoted, "conn": db_conn}


def count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_tiny_run_stores_verified_artifacts_registers_a_version_and_stores_the_gate(
    world: dict[str, Any],
) -> None:
    c: Container = world["c"]
    store: LocalObjectStore = world["store"]
    reports: list[TrainingProgress] = []
    result = run_training_now(REQUEST, deps=c.training(), on_progress=reports.append)

    run = result.run
    assert run.status is RunStatus.SUCCEEDED and run.progress == 1.0, run.error
    keys = {k.removeprefix(f"runs/{run.id}/") for k in store.list(f"runs/{run.id}/")}
    assert {"policy.onnx", "policy_sb3.zip", "manifest.json", "config.yaml", "validation.json",
            "job.log"} <= keys  # fmt: skip
    assert any(k.startswith("tensorboard/ppo_1/events.out.tfevents") for k in keys), keys

    manifest = json.loads(store.get_bytes(f"runs/{run.id}/manifest.json"))
    onnx = store.get_bytes(f"runs/{run.id}/policy.onnx")
    verify_files(
        manifest,
        {"policy.onnx": onnx, "policy_sb3.zip": store.get_bytes(f"runs/{run.id}/policy_sb3.zip")},
    )
    assert manifest["extra"]["run_id"] == run.id and manifest["extra"]["parity"]["ok"]
    # Normalisation was fitted on the training range only.
    assert manifest["data"]["end"] <= "2014-12-31T23:59:59Z"
    assert OnnxPolicyRuntime(onnx).obs_dim == manifest["observation_spec"]["obs_dim"]

    version = result.model_version
    assert version is not None and version.version == 1 and version.agent_name == "tiny"
    assert version.sha256 == manifest["files"]["policy.onnx"]["sha256"]
    assert (
        version.uri_onnx == store.uri(f"runs/{run.id}/policy.onnx") == run.artifacts["policy.onnx"]
    )
    assert version.run_id == run.id and version.owner == "local"
    stored = c.models().get(version.id)
    gate = stored.gate
    assert gate is not None and gate["metric"] == "sharpe" and gate["margin"] == 0.0
    assert set(gate["baselines"]) == {"buy_and_hold", "sma_crossover"}
    for side in (gate["policy"], *gate["baselines"].values()):
        assert {"total_return", "sharpe", "max_drawdown", "n_trades"} <= set(side)
    assert gate["baselines"]["buy_and_hold"]["n_trades"] == 0  # bought once, never sold
    assert gate["windows"][0]["start"] == "2015-01-02T00:00:00Z"
    expected = ModelStatus.PROMOTED if gate["passed"] else ModelStatus.REJECTED
    assert stored.status is expected and gate["decision"] == expected.value
    assert run.metrics is not None and run.metrics["model_version_id"] == version.id
    assert json.loads(store.get_bytes(f"runs/{run.id}/validation.json"))["passed"] == gate["passed"]

    # The gate's policy metrics are what a backtest of the stored ONNX gives on 2015.
    bars = {"AAPL": c.bars().load("AAPL", "1d", None, "2015-12-31")}
    again = evaluate_window(
        policy_strategy(onnx, manifest), bars, start="2015-01-01", end="2015-12-31",
        config=backtest_config_for(manifest["env_config"]),
        baselines={"buy_and_hold": build_strategy("buy_and_hold")}, engine=run_backtest,
        history_bars=260,
    )  # fmt: skip
    assert again.policy["total_return"] == pytest.approx(gate["policy"]["total_return"], abs=1e-12)

    # Progress: increasing, ending at 1.0, with training reports carrying reward and ETA.
    fractions = [r.fraction for r in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    training = [r for r in reports if r.stage == "training" and r.total_timesteps]
    assert training and training[-1].timesteps == 256 and training[-1].eta_seconds == 0.0
    assert training[-1].latest_reward is not None and np.isfinite(training[-1].latest_reward)


def test_a_passing_version_is_promoted_retires_the_previous_one_and_is_published(
    world: dict[str, Any],
) -> None:
    c: Container = world["c"]
    always = {**REQUEST, "gate": {"metric": "total_return", "margin": -10.0}}
    first = run_training_now(always, deps=c.training())
    second = run_training_now({**always, "ppo": {**TINY_PPO, "seed": 1}}, deps=c.training())

    v1, v2 = first.model_version, second.model_version
    assert v1 is not None and v2 is not None and (v1.version, v2.version) == (1, 2)
    assert c.models().get(v1.id).status is ModelStatus.RETIRED
    assert c.models().promoted("tiny") == c.models().get(v2.id)
    assert c.models().get(v2.id).gate["passed"] is True  # type: ignore[index]
    events = [e for e in world["promoted"] if isinstance(e, ModelPromoted)]
    assert [(str(e.model_version_id), e.version) for e in events] == [(v1.id, 1), (v2.id, 2)]
    assert count(world["conn"], "outbox WHERE published_at IS NULL") == 0

    # A person rolls back to version 1: it serves again, version 2 retires, and the rollback
    # is announced (each promotion is its own event, so live agents switch back too).
    rolled, retired = promote_version(v1.id, models=c.models(), relay=c.delivery().relay_all)
    assert rolled.status is ModelStatus.PROMOTED and [r.id for r in retired] == [v2.id]
    assert c.models().promoted("tiny") == c.models().get(v1.id)
    assert c.models().get(v2.id).status is ModelStatus.RETIRED
    events = [e for e in world["promoted"] if isinstance(e, ModelPromoted)]
    assert [(str(e.model_version_id), e.version) for e in events] == [(v1.id, 1), (v2.id, 2), (v1.id, 1)]


def test_cancellation_stops_at_the_next_rollout_and_registers_nothing(
    world: dict[str, Any],
) -> None:
    c: Container = world["c"]
    store: LocalObjectStore = world["store"]
    long = {**REQUEST, "ppo": {**TINY_PPO, "total_timesteps": 50_000}}
    run = submit_training(long, runs=c.runs(), bars=c.bars(), store=store, models=c.models())

    def cancel_on_first_report(p: TrainingProgress) -> None:
        if p.stage == "training" and p.timesteps:
            c.runs().request_cancel(run.id)

    result = execute_training_run(
        run.id, deps=c.training(), on_progress=cancel_on_first_report, progress_interval_s=0.0
    )
    assert result.run.status is RunStatus.CANCELLED and result.model_version is None
    assert result.run.finished_at is not None
    assert count(world["conn"], "model_versions") == 0
    assert not store.exists(f"runs/{run.id}/policy.onnx")


BAD_REQUESTS = [
    ({"symbols": ["ZZZZ"]}, "unknown symbol(s) ['ZZZZ']"),
    ({"train_start": "2014-06-01", "train_end": "2014-01-31"}, "the training range is empty"),
    ({"train_start": "2020-01-01", "train_end": "2020-06-30",
      "val_start": "2020-07-01", "val_end": "2020-12-31"}, "holds 0 bars"),
    ({"val_start": "2014-06-01"}, "training and validation overlap"),
    ({"ppo": {**TINY_PPO, "batch_size": 512}}, "batch_size must be <= n_steps * n_envs"),
    ({"ppo": {**TINY_PPO, "learning_rate": -1}}, "ppo: invalid PPO hyperparameters"),
    ({"env": {"reward": "moon"}}, "invalid env settings"),
    ({"gate": {"metric": "luck"}}, "gate.metric"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "message"), BAD_REQUESTS)
def test_a_bad_request_is_refused_before_anything_is_written(
    world: dict[str, Any], change: dict[str, Any], message: str
) -> None:
    c: Container = world["c"]
    with pytest.raises(ValidationError) as caught:
        submit_training({**REQUEST, **change}, runs=c.runs(), bars=c.bars(), store=world["store"])
    assert message.removeprefix("ppo: ") in str(caught.value)
    assert count(world["conn"], "runs") == 0


@pytest.mark.parametrize(("change", "message"), [BAD_REQUESTS[0], BAD_REQUESTS[4]])
def test_a_stored_bad_request_fails_its_run_before_training(
    world: dict[str, Any], change: dict[str, Any], message: str
) -> None:
    c: Container = world["c"]
    run = c.runs().create("train", {**REQUEST, **change})
    with pytest.raises(ValidationError):
        execute_training_run(run.id, deps=c.training())
    failed = c.runs().get(run.id)
    assert failed.status is RunStatus.FAILED and message in (failed.error or "")
    assert failed.started_at is None  # rejected before it ever ran
    assert count(world["conn"], "model_versions") == 0


def test_walk_forward_folds_train_on_expanding_windows_and_gate_on_their_mean(
    world: dict[str, Any],
) -> None:
    c: Container = world["c"]
    store: LocalObjectStore = world["store"]
    rows: list[Any] = []
    run_ids: list[str] = []

    def snapshot_row(p: TrainingProgress) -> None:
        if p.stage == "training" and p.total_timesteps and run_ids:
            rows.append(c.runs().get(run_ids[0]))

    request = {**REQUEST, "walk_forward_folds": 2}
    run = submit_training(request, runs=c.runs(), bars=c.bars(), store=store, models=c.models())
    run_ids.append(run.id)
    result = execute_training_run(
        run.id, deps=c.training(), on_progress=snapshot_row, progress_interval_s=0.0
    )
    assert result.run.status is RunStatus.SUCCEEDED and len(result.windows) == 2
    first, second = result.windows
    assert first.start == "2015-01-02T00:00:00Z" and second.end == "2015-12-31T00:00:00Z"
    assert first.end < second.start and first.bars + second.bars == 252
    # The registered (last fold's) policy trained up to the end of fold 1, not beyond.
    manifest = json.loads(store.get_bytes(f"runs/{run.id}/manifest.json"))
    assert manifest["extra"]["fold"] == 1 and manifest["data"]["end"] == first.end
    assert manifest["extra"]["validation"] == {"start": second.start, "end": second.end}
    tb = store.list(f"runs/{run.id}/tensorboard/")
    assert any("/fold1_1/" in k for k in tb) and any("/fold2_1/" in k for k in tb)
    gate = c.models().get(result.model_version.id).gate  # type: ignore[union-attr]
    assert gate is not None and len(gate["windows"]) == 2
    mean = (first.policy["total_return"] + second.policy["total_return"]) / 2
    assert gate["policy"]["total_return"] == pytest.approx(mean, rel=1e-12)
    # While training, the run row carried progress, an ETA and the latest reward.
    assert rows and all(r.status is RunStatus.RUNNING for r in rows)
    assert rows[-1].progress > rows[0].progress >= 0.03 and rows[0].eta_seconds is not None
    assert any("reward" in (r.message or "") and "fold 2/2" in (r.message or "") for r in rows)
