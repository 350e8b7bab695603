"""Cloud Run Jobs launcher: one execution per run, never waited on.

:meth:`CloudRunJobLauncher.launch` sends ``JobsClient.run_job`` a ``RunJobRequest`` whose
overrides give the container the run id (``--run-id`` argument and ``STOCKTRADE_RUN_ID``
variable), ask the job to upload its own ``job.log`` (``--write-job-log``), run one task
and bound its time. It returns the execution name from the operation's metadata and never
calls ``.result()``: a Cloud Function must answer while the job runs (GCP.md).

``google-cloud-run`` is imported on first use; the client is created once per launcher.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from stocktrade.errors import ConfigError, TransientError, ValidationError
from stocktrade.logging import get_logger

__all__ = ["DEFAULT_JOBS", "DEFAULT_TIMEOUTS", "CloudRunJobLauncher"]

log = get_logger(__name__)

#: Job kind -> Cloud Run job name (as infra/main.tf names the google_cloud_run_v2_job).
DEFAULT_JOBS: dict[str, str] = {"backtest": "stocktrade-backtest", "train": "stocktrade-train"}
#: Job kind -> task timeout in seconds (infra/main.tf's job timeouts).
DEFAULT_TIMEOUTS: dict[str, int] = {"backtest": 1800, "train": 7200}


class CloudRunJobLauncher:
    """Starts Cloud Run Job executions.

    Args:
        project: Google Cloud project id.
        region: the jobs' region (e.g. ``us-central1``).
        jobs: job kind -> Cloud Run job name (default :data:`DEFAULT_JOBS`).
        timeouts: job kind -> task timeout in seconds (default :data:`DEFAULT_TIMEOUTS`).
        env: extra variables for every execution.
        client: a ``google.cloud.run_v2.JobsClient`` (default: created on first launch).
    """

    def __init__(
        self,
        project: str | None,
        region: str,
        *,
        jobs: Mapping[str, str] | None = None,
        timeouts: Mapping[str, int] | None = None,
        env: Mapping[str, str] | None = None,
        client: Any = None,
    ) -> None:
        if not project:
            raise ConfigError("Cloud Run launcher needs a project (GOOGLE_CLOUD_PROJECT)")
        if not region:
            raise ConfigError("Cloud Run launcher needs a region (STOCKTRADE_GCP_REGION)")
        self.project = project
        self.region = region
        self.jobs = dict(jobs or DEFAULT_JOBS)
        self.timeouts = {**DEFAULT_TIMEOUTS, **dict(timeouts or {})}
        self.env = dict(env or {})
        self._client = client
        self._lock = threading.Lock()

    def job_name(self, kind: str) -> str:
        """Full resource name of the job running ``kind``."""
        if kind not in self.jobs:
            raise ValidationError(f"unknown job kind {kind!r}; expected one of {sorted(self.jobs)}")
        return f"projects/{self.project}/locations/{self.region}/jobs/{self.jobs[kind]}"

    def build_request(self, kind: str, run_id: str, *, args: Sequence[str] = ()) -> Any:
        """The ``run_v2.RunJobRequest`` a launch sends (pure: no network)."""
        from google.cloud import run_v2
        from google.protobuf import duration_pb2

        if not run_id:
            raise ValidationError("run_id is required to launch a job")
        timeout = int(self.timeouts.get(kind, DEFAULT_TIMEOUTS["backtest"]))
        if timeout <= 0:
            raise ConfigError(f"job timeout must be > 0 s, found {timeout}")
        env = {**self.env, "STOCKTRADE_RUN_ID": run_id}
        override = run_v2.RunJobRequest.Overrides.ContainerOverride(
            args=["--run-id", run_id, "--write-job-log", *args],
            env=[run_v2.EnvVar(name=k, value=v) for k, v in sorted(env.items())],
        )
        return run_v2.RunJobRequest(
            name=self.job_name(kind),
            overrides=run_v2.RunJobRequest.Overrides(
                container_overrides=[override],
                task_count=1,
                timeout=duration_pb2.Duration(seconds=timeout),
            ),
        )

    def _get_client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    from google.cloud import run_v2

                    self._client = run_v2.JobsClient()
        return self._client

    def launch(self, kind: str, run_id: str, *, args: Sequence[str] = ()) -> str:
        """Start an execution for ``run_id``; return its name without waiting for it.

        Raises:
            TransientError: the Cloud Run API could not be reached or refused for now.
        """
        request = self.build_request(kind, run_id, args=args)
        try:
            operation = self._get_client().run_job(request=request)
        except Exception as exc:  # google.api_core errors
            raise TransientError(f"cannot start Cloud Run job {request.name}: {exc}") from exc
        execution = _execution_name(operation) or request.name
        log.info(
            "job launched", extra={"execution": execution, "run_id": run_id, "job": request.name}
        )
        return execution


def _execution_name(operation: Any) -> str | None:
    """The execution named in a run_job operation's metadata (no waiting)."""
    try:
        metadata = operation.metadata
        name = getattr(metadata, "name", None)
        if name:
            return str(name)
        inner_name = getattr(getattr(operation, "operation", None), "name", None)
        return str(inner_name) if inner_name else None
    except Exception:  # metadata not yet populated: the job name is enough to find it
        return None
