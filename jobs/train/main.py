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

import argparse
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="jobs.train.main", description=__doc__.splitlines()[0])
    parser.add_argument("--run-id", help="the run to execute (default: $STOCKTRADE_RUN_ID)")
    parser.add_argument(
        "--write-job-log",
        action="store_true",
        help="upload this job's log to runs/<id>/job.log (Cloud Run)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; return the process exit code."""
    args = parse_args(argv)
    from stocktrade.config import get_settings
    from stocktrade.errors import ConfigError, ConflictError, StocktradeError, ValidationError
    from stocktrade.logging import configure_logging, get_logger

    log = get_logger("jobs.train")
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
        # Training is one task; extra tasks of a misconfigured job must not train it twice.
        log.warning("not task 0 of the execution: nothing to do", extra={"run_id": run_id, **task})
        return EXIT_OK

    from stocktrade.bootstrap import bootstrap
    from stocktrade.domain.runs import RunStatus
    from stocktrade.services.training import execute_training_run

    container = bootstrap(settings)
    log.info("training job started", extra={"run_id": run_id, **task})
    try:
        result = execute_training_run(
            run_id,
            deps=container.training(),
            execution=settings.cloud_run_execution,
            context=task,
            restart=settings.cloud_run_task_attempt > 0,
            capture_log=args.write_job_log,
        )
    except ValidationError as exc:
        log.error("training rejected", extra={"run_id": run_id, "error": str(exc)})
        return EXIT_INVALID
    except ConflictError as exc:  # finished, or running elsewhere: retrying cannot help
        log.error("training not executed", extra={"run_id": run_id, "error": str(exc)})
        return EXIT_INVALID
    except StocktradeError as exc:
        log.error("training failed", extra={"run_id": run_id, "error": str(exc)})
        return EXIT_FAILED
    except Exception as exc:  # the run is already marked failed; report and exit non-zero
        log.exception("training crashed", extra={"run_id": run_id, "error": str(exc)})
        return EXIT_FAILED
    finally:
        container.close()
    run = result.run
    version = result.model_version
    log.info(
        "training job finished",
        extra={
            "run_id": run_id,
            "status": run.status.value,
            "model_version_id": None if version is None else version.id,
            "model_status": None if version is None else version.status.value,
            "gate": None if result.decision is None else result.decision.reason,
        },
    )
    return EXIT_OK if run.status in (RunStatus.SUCCEEDED, RunStatus.CANCELLED) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
