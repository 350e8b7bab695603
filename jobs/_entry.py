"""What every Cloud Run Job entry point does around its service call.

``python -m jobs.<name>.main [--run-id ID] [--write-job-log]``. The run id comes from
``--run-id`` or ``STOCKTRADE_RUN_ID``; the task context from the variables Cloud Run sets
(``CLOUD_RUN_JOB``, ``CLOUD_RUN_EXECUTION``, ``CLOUD_RUN_TASK_INDEX``,
``CLOUD_RUN_TASK_COUNT``, ``CLOUD_RUN_TASK_ATTEMPT``; the local launcher sets the same), read
through :mod:`stocktrade.config` like every other setting.

Exit codes: 0 the run succeeded or was cancelled (nothing to retry); 2 the request was invalid,
the run was not in a state to execute, or the job was started wrongly (retrying cannot help,
so the Cloud Run job should have few or no retries); 1 anything else.

This module sits next to the entry points (``jobs/`` is copied into the jobs image and run
from the repository root), not in the installed package: it composes ``bootstrap``, which no
service may import.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from stocktrade.bootstrap import Container
    from stocktrade.config import Settings
    from stocktrade.domain.runs import Run

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2

T = TypeVar("T")

#: ``(container, settings, run_id, task, capture_log) -> outcome``: runs the job's service.
Execute = Callable[["Container", "Settings", str, dict[str, Any], bool], T]
#: ``outcome -> (finished run, extra fields of the "job finished" log line)``.
Summarise = Callable[[T], tuple["Run", dict[str, Any]]]


def parse_args(
    prog: str, description: str, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--run-id", help="the run to execute (default: $STOCKTRADE_RUN_ID)")
    parser.add_argument(
        "--write-job-log",
        action="store_true",
        help="upload this job's log to runs/<id>/job.log (Cloud Run)",
    )
    return parser.parse_args(argv)


def run_job(
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    logger: str,
    label: str,
    execute: Execute[T],
    summarise: Summarise[T],
) -> int:
    """Run one job's task; return the process exit code.

    Args:
        argv: the command line (None: ``sys.argv``).
        prog, description: the module name and first docstring line shown by ``--help``.
        logger: the job's logger name (``jobs.backtest``).
        label: the noun its log lines start with (``backtest``, ``training``).
        execute: runs the service on the run (its errors map to exit codes here).
        summarise: the finished run and what the last log line says about it.
    """
    args = parse_args(prog, description, argv)
    from stocktrade.config import get_settings
    from stocktrade.errors import ConfigError, ConflictError, StocktradeError, ValidationError
    from stocktrade.logging import configure_logging, get_logger

    log = get_logger(logger)
    try:
        settings = get_settings()
    except ConfigError as exc:
        configure_logging("INFO")
        log.error("bad settings", extra={"error": str(exc)})
        return EXIT_INVALID
    configure_logging(settings.log_level)
    run_id = args.run_id or settings.run_id
    task = {
        "job": settings.cloud_run_job,
        "execution": settings.cloud_run_execution,
        "task_index": settings.cloud_run_task_index,
        "task_count": settings.cloud_run_task_count,
        "attempt": settings.cloud_run_task_attempt,
    }
    if not run_id:
        log.error("no run id: pass --run-id or set STOCKTRADE_RUN_ID", extra=task)
        return EXIT_INVALID
    if settings.cloud_run_task_index != 0:
        # A run is one task; extra tasks of a misconfigured job must not execute it twice.
        log.warning("not task 0 of the execution: nothing to do", extra={"run_id": run_id, **task})
        return EXIT_OK

    from stocktrade.bootstrap import bootstrap
    from stocktrade.domain.runs import RunStatus

    container = bootstrap(settings)
    log.info(f"{label} job started", extra={"run_id": run_id, **task})
    try:
        outcome = execute(container, settings, run_id, task, args.write_job_log)
    except ValidationError as exc:
        log.error(f"{label} rejected", extra={"run_id": run_id, "error": str(exc)})
        return EXIT_INVALID
    except ConflictError as exc:  # finished, or running elsewhere: retrying cannot help
        log.error(f"{label} not executed", extra={"run_id": run_id, "error": str(exc)})
        return EXIT_INVALID
    except StocktradeError as exc:
        log.error(f"{label} failed", extra={"run_id": run_id, "error": str(exc)})
        return EXIT_FAILED
    except Exception as exc:  # the run is already marked failed; report and exit non-zero
        log.exception(f"{label} crashed", extra={"run_id": run_id, "error": str(exc)})
        return EXIT_FAILED
    finally:
        container.close()
    run, fields = summarise(outcome)
    log.info(
        f"{label} job finished",
        extra={"run_id": run_id, "status": run.status.value, **fields},
    )
    return EXIT_OK if run.status in (RunStatus.SUCCEEDED, RunStatus.CANCELLED) else EXIT_FAILED
