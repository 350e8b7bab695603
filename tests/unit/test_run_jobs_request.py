"""The Cloud Run Jobs launcher builds the right RunJobRequest and never waits on it.

Nothing here talks to Google Cloud: requests are inspected, and launches go to a fake client.
"""

from __future__ import annotations

from typing import Any

import pytest

from stocktrade.adapters.gcp.run_jobs import CloudRunJobLauncher
from stocktrade.errors import ConfigError, TransientError, ValidationError

pytest.importorskip("google.cloud.run_v2", reason="google-cloud-run is not installed")

RUN_ID = "0b5f3a2e-8d1c-4c3e-9a57-2f0e6d4b1c99"


class FakeOperation:
    """An LRO whose result must never be awaited inside a launcher."""

    def __init__(self, execution: str) -> None:
        self.metadata = type("Execution", (), {"name": execution})()

    def result(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the launcher blocked on operation.result()")


class FakeJobsClient:
    def __init__(self) -> None:
        self.requests: list[Any] = []

    def run_job(self, request: Any = None, **kwargs: Any) -> FakeOperation:
        self.requests.append(request)
        return FakeOperation(f"{request.name}/executions/backtest-x7k2p")


def env_of(override: Any) -> dict[str, str]:
    return {e.name: e.value for e in override.env}


def test_request_names_the_job_and_carries_the_run_id_in_args_and_env() -> None:
    launcher = CloudRunJobLauncher("my-project", "europe-west1", env={"STOCKTRADE_ENV": "prod"})
    request = launcher.build_request("backtest", RUN_ID)
    assert request.name == "projects/my-project/locations/europe-west1/jobs/stocktrade-backtest"
    (override,) = request.overrides.container_overrides
    assert list(override.args) == ["--run-id", RUN_ID, "--write-job-log"]
    assert env_of(override) == {"STOCKTRADE_RUN_ID": RUN_ID, "STOCKTRADE_ENV": "prod"}
    assert request.overrides.task_count == 1
    assert request.overrides.timeout.total_seconds() == 1800


def test_timeouts_and_job_names_are_per_kind() -> None:
    launcher = CloudRunJobLauncher(
        "p", "us-central1", jobs={"backtest": "bt-job", "train": "tr-job"}, timeouts={"train": 7200}
    )
    train = launcher.build_request("train", RUN_ID, args=["--seed", "7"])
    assert train.name.endswith("/jobs/tr-job")
    assert train.overrides.timeout.total_seconds() == 7200
    assert list(train.overrides.container_overrides[0].args)[-2:] == ["--seed", "7"]
    assert launcher.build_request("backtest", RUN_ID).name.endswith("/jobs/bt-job")


def test_launch_sends_the_request_and_returns_the_execution_without_waiting() -> None:
    client = FakeJobsClient()
    launcher = CloudRunJobLauncher("p", "us-central1", client=client)
    execution = launcher.launch("backtest", RUN_ID)
    assert (
        execution
        == "projects/p/locations/us-central1/jobs/stocktrade-backtest/executions/backtest-x7k2p"
    )
    (sent,) = client.requests
    assert sent == launcher.build_request("backtest", RUN_ID)


def test_an_api_failure_is_transient_and_names_the_job() -> None:
    class Broken:
        def run_job(self, request: Any = None) -> Any:
            raise RuntimeError("503 unavailable")

    launcher = CloudRunJobLauncher("p", "us-central1", client=Broken())
    with pytest.raises(TransientError, match="jobs/stocktrade-backtest: 503"):
        launcher.launch("backtest", RUN_ID)


def test_unknown_kind_and_missing_project_are_clear_errors() -> None:
    with pytest.raises(ValidationError, match="unknown job kind 'deploy'"):
        CloudRunJobLauncher("p", "r").build_request("deploy", RUN_ID)
    with pytest.raises(ConfigError, match="project"):
        CloudRunJobLauncher(None, "us-central1")
    with pytest.raises(ValidationError, match="run_id"):
        CloudRunJobLauncher("p", "r").build_request("backtest", "")


def test_the_local_launcher_gives_the_job_the_cloud_run_task_variables(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stocktrade.adapters.local.launcher import SubprocessJobLauncher
    from stocktrade.adapters.local.object_store import LocalObjectStore

    monkeypatch.setenv("STOCKTRADE_TEST_DATABASE_URL", "postgresql://harness-only")
    launcher = SubprocessJobLauncher(
        LocalObjectStore(tmp_path), env={"DATABASE_URL": "postgresql://db/x"}
    )
    assert launcher.command("backtest", RUN_ID)[1:] == [
        "-m", "jobs.backtest.main", "--run-id", RUN_ID,
    ]  # fmt: skip
    env = launcher.environment("backtest", RUN_ID, "backtest-local-1")
    assert {k: env[k] for k in env if k.startswith("CLOUD_RUN_")} == {
        "CLOUD_RUN_JOB": "backtest",
        "CLOUD_RUN_EXECUTION": "backtest-local-1",
        "CLOUD_RUN_TASK_INDEX": "0",
        "CLOUD_RUN_TASK_COUNT": "1",
        "CLOUD_RUN_TASK_ATTEMPT": "0",
    }
    assert env["STOCKTRADE_RUN_ID"] == RUN_ID and env["DATABASE_URL"] == "postgresql://db/x"
    assert "STOCKTRADE_TEST_DATABASE_URL" not in env  # the job's settings would refuse it
    assert str(launcher.root) in env["PYTHONPATH"].split(":")
    with pytest.raises(ValidationError, match="unknown job kind"):
        launcher.command("deploy", RUN_ID)
