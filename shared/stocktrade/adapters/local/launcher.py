"""Cloud Run Jobs on a laptop: the same entry point, run as a subprocess with the same env.

:class:`SubprocessJobLauncher` starts ``python -m jobs.<kind>.main --run-id <id>`` with the
variables Cloud Run gives every task (``CLOUD_RUN_JOB``, ``CLOUD_RUN_EXECUTION``,
``CLOUD_RUN_TASK_INDEX=0``, ``CLOUD_RUN_TASK_COUNT=1``, ``CLOUD_RUN_TASK_ATTEMPT=0``) plus
``STOCKTRADE_RUN_ID``, and returns at once (the job reports through its run row).

The job's stdout and stderr go to ``runs/<run_id>/job.log`` in the object store. With a local
store the launcher writes that file directly while the job runs; with any other store
(``gs://`` through the emulator) it asks the job to upload its own log
(``--write-job-log``, as the Cloud Run launcher does) and keeps the raw output in a local file.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stocktrade.config import ENV_PREFIX, Settings
from stocktrade.errors import ConfigError, NotFoundError, ValidationError
from stocktrade.logging import get_logger

if TYPE_CHECKING:
    from stocktrade.ports import ObjectStore

__all__ = ["DEFAULT_MODULES", "SubprocessJobLauncher", "job_log_key", "project_root"]

log = get_logger(__name__)

#: Job kind -> module run with ``python -m``.
DEFAULT_MODULES: dict[str, str] = {"backtest": "jobs.backtest.main", "train": "jobs.train.main"}


def job_log_key(run_id: str) -> str:
    """Object key of a run's job log."""
    return f"runs/{run_id}/job.log"


def known_setting_variables() -> set[str]:
    """``STOCKTRADE_*`` variables :class:`stocktrade.config.Settings` accepts."""
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def project_root() -> Path | None:
    """The checkout holding ``jobs/`` next to ``shared/stocktrade`` (None if not found)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "jobs").is_dir() and (parent / "shared" / "stocktrade").is_dir():
            return parent
    return None


class SubprocessJobLauncher:
    """Runs job entry points as local subprocesses (the embedded stand-in for Cloud Run Jobs).

    Args:
        store: the object store the run's artifacts (and ``job.log``) go to.
        env: variables for the job on top of the inherited environment (typically
            ``DATABASE_URL`` and ``STOCKTRADE_OBJECT_STORE_URL``, so the job reaches the same
            database and store as the launcher).
        inherit_env: start from this process's environment (default) or from ``env`` alone.
        python: interpreter to run (default: this one).
        root: folder holding ``jobs/`` (default: found next to the package).
        modules: job kind -> module (default :data:`DEFAULT_MODULES`).
    """

    def __init__(
        self,
        store: ObjectStore,
        *,
        env: Mapping[str, str] | None = None,
        inherit_env: bool = True,
        python: str | None = None,
        root: str | Path | None = None,
        modules: Mapping[str, str] | None = None,
    ) -> None:
        found = Path(root) if root is not None else project_root()
        if found is None or not (found / "jobs").is_dir():
            raise ConfigError(
                f"cannot find the jobs/ folder (looked in {root or 'the checkout'}); pass root="
            )
        self.root = found.resolve()
        self.store = store
        self.env = {k: str(v) for k, v in (env or {}).items()}
        self.inherit_env = inherit_env
        self.python = python or sys.executable
        self.modules = dict(modules or DEFAULT_MODULES)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def command(self, kind: str, run_id: str, *, args: Sequence[str] = ()) -> list[str]:
        """The command line a launch runs."""
        if kind not in self.modules:
            raise ValidationError(
                f"unknown job kind {kind!r}; expected one of {sorted(self.modules)}"
            )
        return [self.python, "-m", self.modules[kind], "--run-id", run_id, *args]

    def environment(self, kind: str, run_id: str, execution: str) -> dict[str, str]:
        """The job's environment: inherited + ``env`` + the Cloud Run task variables."""
        base = dict(os.environ) if self.inherit_env else {"PATH": os.environ.get("PATH", "")}
        # An inherited STOCKTRADE_* variable the job's settings do not know (a test harness's
        # own, say) would make the job refuse to start; only known settings are passed on.
        known = known_setting_variables()
        base = {k: v for k, v in base.items() if not k.startswith(ENV_PREFIX) or k in known}
        base.update(self.env)
        paths = [str(self.root), str(self.root / "shared")]
        if base.get("PYTHONPATH"):
            paths.append(base["PYTHONPATH"])
        base.update(
            {
                "PYTHONPATH": os.pathsep.join(paths),
                "PYTHONUNBUFFERED": "1",
                "CLOUD_RUN_JOB": kind,
                "CLOUD_RUN_EXECUTION": execution,
                "CLOUD_RUN_TASK_INDEX": "0",
                "CLOUD_RUN_TASK_COUNT": "1",
                "CLOUD_RUN_TASK_ATTEMPT": "0",
                "STOCKTRADE_RUN_ID": run_id,
            }
        )
        return base

    def launch(self, kind: str, run_id: str, *, args: Sequence[str] = ()) -> str:
        """Start the job for ``run_id`` and return its execution name (does not wait).

        Raises:
            ValidationError: unknown job kind.
        """
        execution = f"{kind}-local-{secrets.token_hex(4)}"
        local_store = hasattr(self.store, "path")
        extra = list(args) if local_store else ["--write-job-log", *args]
        cmd = self.command(kind, run_id, args=extra)
        if local_store:
            log_path = Path(self.store.path(job_log_key(run_id)))  # type: ignore[attr-defined]
        else:
            log_path = Path(tempfile.gettempdir()) / "stocktrade-jobs" / f"{execution}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).isoformat()
        # The child gets its own copy of the file descriptor; ours closes when Popen returns.
        with open(log_path, "ab") as handle:
            handle.write(f"# {stamp} launch {execution}: {' '.join(cmd[1:])}\n".encode())
            handle.flush()
            proc = subprocess.Popen(
                cmd, cwd=self.root, env=self.environment(kind, run_id, execution),
                stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                start_new_session=True,  # a detached job survives Ctrl-C in the launching shell
            )  # fmt: skip
        with self._lock:
            self._procs[execution] = proc
        log.info(
            "job launched",
            extra={
                "execution": execution,
                "run_id": run_id,
                "pid": proc.pid,
                "job_log": str(log_path),
            },
        )
        return execution

    def process(self, execution: str) -> subprocess.Popen[bytes]:
        """The process of an execution started by this launcher."""
        try:
            return self._procs[execution]
        except KeyError:
            raise NotFoundError(
                f"no execution {execution!r} was started by this launcher"
            ) from None

    def pid(self, execution: str) -> int:
        """Process id of an execution."""
        return self.process(execution).pid

    def poll(self, execution: str) -> int | None:
        """Exit code of an execution, or None while it runs."""
        return self.process(execution).poll()

    def wait(self, execution: str, timeout: float | None = None) -> int:
        """Wait for an execution to exit and return its exit code.

        Raises:
            subprocess.TimeoutExpired: it is still running after ``timeout`` seconds.
        """
        return self.process(execution).wait(timeout)

    def terminate(self, execution: str) -> None:
        """Stop an execution now (SIGTERM); cooperative cancel goes through the run row."""
        proc = self.process(execution)
        if proc.poll() is None:
            proc.terminate()

    def describe(self) -> dict[str, Any]:
        """What this launcher runs (for logs)."""
        return {"root": str(self.root), "python": self.python, "modules": self.modules}
