"""Cloud Run Job entry point: execute one training run.

``python -m jobs.train.main [--run-id ID] [--write-job-log]``. The run id comes from
``--run-id`` or ``STOCKTRADE_RUN_ID``; the task context from the variables Cloud Run sets
(``CLOUD_RUN_JOB``, ``CLOUD_RUN_EXECUTION``, ``CLOUD_RUN_TASK_INDEX``,
``CLOUD_RUN_TASK_COUNT``, ``CLOUD_RUN_TASK_ATTEMPT``; the local launcher sets the same), read
through :mod:`stocktrade.config` like every other setting. ``STOCKTRADE_TORCH_THREADS`` pins
torch's threads when the request does not.

The job trains, exports and verifies the policy, stores its artifacts, registers the model
version and runs the promotion gate (:func:`stocktrade.services.training.execute_training_run`).

Exit codes: 0 the run succeeded (promoted or rejected by the gate) or was cancelled: nothing
to retry; 2 the request was invalid, the run was not in a state to execute, or the job was
started wrongly (retrying cannot help, so the Cloud Run job should have few or no retries);
1 anything else.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from jobs._entry import EXIT_FAILED, EXIT_INVALID, EXIT_OK, run_job

if TYPE_CHECKING:
    from stocktrade.bootstrap import Container
    from stocktrade.config import Settings
    from stocktrade.domain.runs import Run
    from stocktrade.services.training import TrainingResult

__all__ = ["EXIT_FAILED", "EXIT_INVALID", "EXIT_OK", "main"]


def _execute(
    container: Container, settings: Settings, run_id: str, task: dict[str, Any], capture: bool
) -> TrainingResult:
    from stocktrade.services.training import execute_training_run

    return execute_training_run(
        run_id,
        deps=container.training(),
        execution=settings.cloud_run_execution,
        context=task,
        restart=settings.cloud_run_task_attempt > 0,
        capture_log=capture,
    )


def _summarise(result: TrainingResult) -> tuple[Run, dict[str, Any]]:
    version = result.model_version
    return result.run, {
        "model_version_id": None if version is None else version.id,
        "model_status": None if version is None else version.status.value,
        "gate": None if result.decision is None else result.decision.reason,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; return the process exit code."""
    return run_job(
        argv,
        prog="jobs.train.main",
        description=__doc__.splitlines()[0],
        logger="jobs.train",
        label="training",
        execute=_execute,
        summarise=_summarise,
    )


if __name__ == "__main__":
    sys.exit(main())
