"""Cloud Run Job entry point: execute one backtest run.

``python -m jobs.backtest.main [--run-id ID] [--write-job-log]``. The run id comes from
``--run-id`` or ``STOCKTRADE_RUN_ID``; the task context from the variables Cloud Run sets
(``CLOUD_RUN_JOB``, ``CLOUD_RUN_EXECUTION``, ``CLOUD_RUN_TASK_INDEX``,
``CLOUD_RUN_TASK_COUNT``, ``CLOUD_RUN_TASK_ATTEMPT``; the local launcher sets the same), read
through :mod:`stocktrade.config` like every other setting.

Exit codes: 0 the run succeeded (or was cancelled: nothing to retry); 2 the request was
invalid, the run was not in a state to execute, or the job was started wrongly (retrying
cannot help, so the Cloud Run job should have few or no retries); 1 anything else.
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

__all__ = ["EXIT_FAILED", "EXIT_INVALID", "EXIT_OK", "main"]


def _execute(
    container: Container, settings: Settings, run_id: str, task: dict[str, Any], capture: bool
) -> Run:
    from stocktrade.services.backtest_runs import execute_backtest_run

    return execute_backtest_run(
        run_id,
        runs=container.runs(),
        bars=container.bars(),
        store=container.store(),
        engine=container.backtest_engine(),
        execution=settings.cloud_run_execution,
        context=task,
        restart=settings.cloud_run_task_attempt > 0,
        capture_log=capture,
    )


def _summarise(run: Run) -> tuple[Run, dict[str, Any]]:
    return run, {"metrics": run.metrics}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; return the process exit code."""
    return run_job(
        argv,
        prog="jobs.backtest.main",
        description=__doc__.splitlines()[0],
        logger="jobs.backtest",
        label="backtest",
        execute=_execute,
        summarise=_summarise,
    )


if __name__ == "__main__":
    sys.exit(main())
