"""Training runs: accept a request, train and export a policy, register it, gate it.

The same code behind ``stocktrade train``, the HTTP API and the ``train`` Cloud Run Job:

* :func:`submit_training` validates the request **before anything is written** (unknown symbol,
  empty or overlapping date ranges, bad hyperparameters, an agent name owned by another user:
  :class:`~stocktrade.errors.ValidationError`, nothing changed), records it as a ``queued``
  ``train`` run and only then launches the job (if a launcher is given).
* :func:`execute_training_run` is what the job runs. It validates the stored request again
  (a bad one marks the run failed with the reason, before any training), then:

  1. loads each symbol's bars from the repository, up to the end of the validation window;
  2. trains PPO on the training range (normalisation fitted on that range only; seeded;
     ``torch`` threads pinned), writing TensorBoard scalars, progress (percent, ETA, latest
     reward) to the run row, and checking ``cancel_requested`` at every rollout end (a
     cancelled run stops there and ends ``cancelled``, with nothing registered);
  3. exports the policy to ONNX with the parity check and stores ``policy.onnx``,
     ``policy_sb3.zip``, ``manifest.json``, ``tensorboard/`` and ``config.yaml`` under
     ``runs/<run_id>/``;
  4. registers the next model version of the agent (sha256, URIs, manifest);
  5. backtests the policy on the validation window against buy-and-hold and an SMA crossover
     with the same costs (:mod:`stocktrade.services.promotion`), stores the decision and both
     sides' metrics in ``model_versions.gate`` (and ``validation.json``), and promotes the
     version if it beats the best baseline by the configured margin;
  6. marks the run succeeded with the training and validation metrics.

  Any error marks the run failed with the reason and is raised again (the job exits non-zero).

Walk-forward (``walk_forward_folds > 1``): the validation window is cut into consecutive folds
of about equal bar counts; fold ``i`` trains on everything from ``train_start`` up to the
start of fold ``i`` (fold 0 up to ``train_end``) and is backtested on fold ``i``. The gate
compares the mean of each side's metric over the folds; the last fold's policy (trained on
the most data) is the one registered.

The torch side (training, export, the policy as a strategy) and the backtest engine come in
through :class:`TrainingDeps` from the composition root (:mod:`stocktrade.bootstrap`):
services import neither torch nor adapters, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from stocktrade.backtest.config import parse_utc
from stocktrade.domain.bars import Timeframe
from stocktrade.domain.runs import Run, RunKind
from stocktrade.errors import (
    CancelledError,
    ConflictError,
    ValidationError,
)
from stocktrade.logging import get_logger
from stocktrade.services.promotion import (
    GateConfig,
    GateDecision,
    ModelRegistry,
    WindowEvaluation,
    aggregate_metrics,
    apply_gate,
    backtest_config_for,
    decide,
    evaluate_window,
)
from stocktrade.services.run_lifecycle import JobLog, execute_run, submit_run

if TYPE_CHECKING:
    import numpy as np

    from stocktrade.data.arrays import BarArrays
    from stocktrade.domain.model_versions import ModelVersion
    from stocktrade.ports import BarRepository, JobLauncher, ObjectStore, RunRepository
    from stocktrade.services.backtest_runs import BacktestEngine
    from stocktrade.strategies.base import Strategy

__all__ = [
    "ARTIFACTS",
    "TrainRequest",
    "TrainingDeps",
    "TrainingPlan",
    "TrainingProgress",
    "TrainingResult",
    "check_training_request",
    "execute_training_run",
    "fold_windows",
    "run_training_now",
    "submit_training",
]

log = get_logger(__name__)

ONNX_NAME = "policy.onnx"
SB3_NAME = "policy_sb3.zip"
MANIFEST_NAME = "manifest.json"
CONFIG_NAME = "config.yaml"
VALIDATION_NAME = "validation.json"
JOB_LOG_NAME = "job.log"
#: Files a successful training run stores under ``runs/<run_id>/`` (plus ``tensorboard/``).
ARTIFACTS = (ONNX_NAME, SB3_NAME, MANIFEST_NAME, CONFIG_NAME, VALIDATION_NAME)

_AGENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SYMBOL = re.compile(r"^[A-Za-z0-9^][A-Za-z0-9.^=_/-]{0,31}$")
_MAX_SYMBOLS = 20
# Share of the progress bar each stage takes.
_P_LOADED = 0.03
_P_TRAINED = 0.88
_P_STORED = 0.92
_CANCEL_CHECK_S = 0.2


# -- the request -------------------------------------------------------------------------------


def _day_or_time(value: str | None, name: str, *, end: bool) -> datetime | None:
    """A bound as an aware UTC datetime; a plain date as an end bound is the whole day."""
    if value is None:
        return None
    parsed = parse_utc(value, name)
    assert parsed is not None
    if end and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        parsed = parsed + timedelta(days=1) - timedelta(microseconds=1)
    return parsed


def _text(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


class TrainRequest(BaseModel):
    """A training request, as stored in ``runs.config`` (frozen; unknown fields are errors).

    Attributes:
        agent: the agent name the policy is registered under (letters, digits, ``._-``).
        symbols: symbols to train on (each an env of the batch) and to validate on.
        timeframe: bar timeframe (``1d``, ``1h``, ...).
        train_start: first training bar (inclusive; None = as early as the features allow).
        train_end: last training day (a plain date includes the whole day).
        val_start, val_end: the validation window; it must start after ``train_end``.
        walk_forward_folds: 1 = one split; k > 1 = k walk-forward folds (module docs).
        env: :class:`~stocktrade.rl.env.EnvConfig` fields (costs, reward, episodes, ...).
        ppo: :class:`~stocktrade.rl.ppo.PPOConfig` fields (total_timesteps, net_arch, seed,
            ...); ``torch_threads`` defaults to the deployment's setting.
        observation: :class:`~stocktrade.quant.observation.ObservationSpec` fields
            (``feature_names``, ``window``, ``clip``, ``include_position``).
        features: :class:`~stocktrade.quant.features.FeatureSpec` fields.
        gate: the promotion gate (:class:`~stocktrade.services.promotion.GateConfig`).
        parity_observations: env observations the ONNX export is checked on.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: str
    symbols: tuple[str, ...]
    timeframe: str = "1d"
    train_start: str | None = None
    train_end: str
    val_start: str
    val_end: str
    walk_forward_folds: int = Field(default=1, ge=1, le=12)
    env: dict[str, Any] = Field(default_factory=dict)
    ppo: dict[str, Any] = Field(default_factory=dict)
    observation: dict[str, Any] = Field(default_factory=dict)
    features: dict[str, Any] = Field(default_factory=dict)
    gate: GateConfig = Field(default_factory=GateConfig)
    parity_observations: int = Field(default=1000, ge=10, le=100_000)

    @field_validator("agent")
    @classmethod
    def _agent_name(cls, value: str) -> str:
        if not _AGENT.match(value):
            raise ValueError(
                f"agent name must be 1-100 letters, digits, '.', '_' or '-' (starting with a "
                f"letter or digit), found {value!r}"
            )
        return value

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(s.strip() for s in value.split(",") if s.strip())
        return value

    @field_validator("symbols")
    @classmethod
    def _check_symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one symbol is needed, found none")
        bad = [s for s in value if not _SYMBOL.match(s)]
        if bad:
            raise ValueError(f"malformed symbol(s) {bad}: expected 1-32 letters, digits or .^=_/-")
        if len(set(value)) != len(value):
            raise ValueError(f"symbols repeat: {list(value)}")
        if len(value) > _MAX_SYMBOLS:
            raise ValueError(f"at most {_MAX_SYMBOLS} symbols per training run, found {len(value)}")
        return value

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, value: str) -> str:
        return Timeframe.parse(value).value

    @field_validator("train_start", "train_end", "val_start", "val_end")
    @classmethod
    def _date(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = str(value).strip()
        try:
            parse_utc(text, "date")
        except ValidationError:
            raise ValueError(
                f"an ISO 8601 date or time (e.g. 2014-12-31) expected, found {value!r}"
            ) from None
        return text

    @model_validator(mode="after")
    def _ranges(self) -> TrainRequest:
        train_lo, train_hi, val_lo, val_hi = self.bounds()
        if train_lo is not None and train_lo > train_hi:
            raise ValueError(
                f"the training range is empty: train_start {self.train_start} is after "
                f"train_end {self.train_end}"
            )
        if val_lo > val_hi:
            raise ValueError(
                f"the validation range is empty: val_start {self.val_start} is after "
                f"val_end {self.val_end}"
            )
        if val_lo <= train_hi:
            raise ValueError(
                f"training and validation overlap: training ends {self.train_end}, validation "
                f"starts {self.val_start}; the validation window must start after the "
                "training range ends"
            )
        return self

    def bounds(self) -> tuple[datetime | None, datetime, datetime, datetime]:
        """``(train_start, train_end, val_start, val_end)`` as aware UTC datetimes (end bounds
        given as plain dates include the whole day)."""
        train_hi = _day_or_time(self.train_end, "train_end", end=True)
        val_lo = _day_or_time(self.val_start, "val_start", end=False)
        val_hi = _day_or_time(self.val_end, "val_end", end=True)
        assert train_hi is not None and val_lo is not None and val_hi is not None
        return _day_or_time(self.train_start, "train_start", end=False), train_hi, val_lo, val_hi

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> TrainRequest:
        """Validate a request (a stored config, an API body); raise :class:`ValidationError`
        naming every problem."""
        if not isinstance(config, Mapping):
            raise ValidationError(
                f"training request must be an object, found {type(config).__name__}"
            )
        try:
            return cls.model_validate(dict(config))
        except PydanticValidationError as exc:
            raise ValidationError("invalid training request: " + _problems(exc)) from None

    def to_config(self) -> dict[str, Any]:
        """JSON-safe dict (:meth:`parse` reads it back unchanged)."""
        return self.model_dump(mode="json")


def _problems(exc: PydanticValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


# -- validation against code and data ----------------------------------------------------------


@dataclass(frozen=True)
class TrainingPlan:
    """A request checked against the code (configs build) and the stored bars.

    Attributes:
        request: the request.
        env: the ``EnvConfig`` as a full dict (defaults filled in).
        ppo: the ``PPOConfig`` fields as given (defaults filled in by the trainer).
        feature_warmup: bars the features need before the first observation.
        policy_warmup: bars before the policy's first decision (features + window).
        coverage: symbol -> (first stored bar, last stored bar, bars).
    """

    request: TrainRequest
    env: dict[str, Any]
    ppo: dict[str, Any]
    feature_warmup: int
    policy_warmup: int
    coverage: dict[str, tuple[datetime, datetime, int]] = field(default_factory=dict)


def _check_configs(request: TrainRequest) -> tuple[dict[str, Any], int, int, list[str]]:
    """Build every config the run needs (no torch); returns env dict, warm-ups, problems."""
    from stocktrade.quant.features import FeatureSpec
    from stocktrade.quant.observation import ObservationSpec
    from stocktrade.rl.env import EnvConfig
    from stocktrade.services.backtest_runs import build_strategy

    problems: list[str] = []
    env: dict[str, Any] = {}
    try:
        env_config = EnvConfig(**request.env)
        env = env_config.model_dump(mode="json")
        if env_config.action_mode != "discrete":
            problems.append(
                "env.action_mode must be 'discrete' (HOLD/BUY/SELL): the promotion gate and the "
                f"live chain run discrete policies; found {env_config.action_mode!r}"
            )
    except (PydanticValidationError, TypeError) as exc:
        detail = _problems(exc) if isinstance(exc, PydanticValidationError) else str(exc)
        problems.append(f"invalid env settings: {detail}")
    problems.extend(_check_ppo(request.ppo))
    feature_warmup = policy_warmup = 0
    try:
        fspec = FeatureSpec.from_dict(request.features) if request.features else FeatureSpec()
        ospec = (
            ObservationSpec.from_dict(request.observation)
            if request.observation
            else ObservationSpec()
        )
        missing = [n for n in ospec.feature_names if n not in fspec.names()]
        if missing:
            problems.append(
                f"observation.feature_names {missing} are not produced by the feature spec "
                f"(it produces {fspec.names()})"
            )
        feature_warmup = fspec.warmup
        policy_warmup = fspec.warmup + ospec.window - 1
    except (ValidationError, TypeError, ValueError) as exc:
        problems.append(f"invalid features or observation settings: {exc}")
    for name, params in request.gate.baselines.items():
        try:
            build_strategy(name, params)
        except ValidationError as exc:
            problems.append(f"gate baseline: {exc}")
    return env, feature_warmup, policy_warmup, problems


def _check_ppo(ppo: Mapping[str, Any]) -> list[str]:
    """Validate PPO hyperparameters with the trainer's own model (this imports torch)."""
    from stocktrade.rl.ppo import PPOConfig

    try:
        PPOConfig(**dict(ppo))
    except PydanticValidationError as exc:
        return [f"invalid PPO hyperparameters: {_problems(exc)}"]
    except TypeError as exc:
        return [f"invalid PPO hyperparameters: {exc}"]
    return []


def check_training_request(
    request: TrainRequest,
    bars: BarRepository,
    *,
    models: ModelRegistry | None = None,
    owner: str | None = None,
) -> TrainingPlan:
    """Validate a request against the code and the stored data, before any training.

    Checks the env, PPO, feature, observation and gate settings; that every symbol has bars
    of the timeframe; that the training range holds enough bars past the feature warm-up and
    the validation window enough bars to score (two per walk-forward fold); and that the
    agent name is not another user's. Counts bars only; loads none.

    Raises:
        ValidationError: what is wrong, all in one message where possible.
    """
    env, feature_warmup, policy_warmup, problems = _check_configs(request)
    train_lo, train_hi, val_lo, val_hi = request.bounds()
    coverage: dict[str, tuple[datetime, datetime, int]] = {}
    summaries = {
        s.symbol: s for s in bars.summary(list(request.symbols)) if s.timeframe == request.timeframe
    }
    missing = [s for s in request.symbols if s not in summaries]
    if missing:
        problems.append(_unknown_symbols(missing, request.timeframe, bars))
    for symbol in request.symbols:
        summary = summaries.get(symbol)
        if summary is None:
            continue
        coverage[symbol] = (summary.first, summary.last, summary.bars)
        stored = f"stored {request.timeframe} bars run from {_text(summary.first)} to {_text(summary.last)}"
        in_train = bars.count(symbol, request.timeframe, train_lo, train_hi)
        upto_train = bars.count(symbol, request.timeframe, None, train_hi)
        if in_train < 2:
            problems.append(
                f"{symbol}: the training range {request.train_start or 'first'} .. "
                f"{request.train_end} holds {in_train} bars (at least 2 needed); {stored}"
            )
        elif upto_train - policy_warmup < 2:
            problems.append(
                f"{symbol}: {upto_train} bars up to {request.train_end}, but the features and "
                f"observation window need {policy_warmup} bars of warm-up plus 2 to train on"
            )
        in_val = bars.count(symbol, request.timeframe, val_lo, val_hi)
        needed = 2 * request.walk_forward_folds
        if in_val < needed:
            problems.append(
                f"{symbol}: the validation window {request.val_start} .. {request.val_end} holds "
                f"{in_val} bars ({needed} needed for {request.walk_forward_folds} fold(s)); "
                f"{stored}"
            )
    if models is not None and owner is not None:
        try:
            models.check_agent_owner(request.agent, owner)
        except ConflictError as exc:
            problems.append(str(exc))
    if problems:
        raise ValidationError("invalid training request: " + "; ".join(problems))
    return TrainingPlan(
        request=request,
        env=env,
        ppo=dict(request.ppo),
        feature_warmup=feature_warmup,
        policy_warmup=policy_warmup,
        coverage=coverage,
    )


def _unknown_symbols(missing: Sequence[str], timeframe: str, bars: BarRepository) -> str:
    known = sorted({s.symbol for s in bars.summary() if s.timeframe == timeframe})
    shown = ", ".join(known[:30]) + (" ..." if len(known) > 30 else "")
    return f"unknown symbol(s) {list(missing)}: no {timeframe} bars stored" + (
        f" (stored: {shown})" if known else " (no bars are stored; run stocktrade data import)"
    )


# -- dependencies, progress, results -----------------------------------------------------------


@dataclass(frozen=True)
class TrainingDeps:
    """What a training run needs; built by :meth:`stocktrade.bootstrap.Container.training`.

    Attributes:
        runs: the run repository.
        bars: the stored bars.
        store: the object store (artifacts).
        models: the model registry.
        trainer: :func:`stocktrade.rl.pipeline.train_policy` (bars and settings in, a trained
            and parity-checked policy out).
        policy_factory: :func:`stocktrade.rl.pipeline.policy_strategy` (ONNX bytes and
            manifest -> the backtest strategy).
        engine: :func:`stocktrade.backtest.engine.run_backtest`.
        relay: publishes the outbox after a promotion (``DeliveryService.relay_all``); None
            leaves the ``ModelPromoted`` event for the next relay pass.
        torch_threads: default ``ppo.torch_threads`` when a request does not set it.
        workdir: where temporary files (TensorBoard) go; the system temp folder when None.
    """

    runs: RunRepository
    bars: BarRepository
    store: ObjectStore
    models: ModelRegistry
    trainer: Callable[..., Any]
    policy_factory: Callable[[bytes, Mapping[str, Any]], Strategy]
    engine: BacktestEngine
    relay: Callable[[], object] | None = None
    torch_threads: int | None = None
    workdir: Path | None = None


@dataclass(frozen=True)
class TrainingProgress:
    """One progress report of a training run (what the run row and a progress bar show).

    Attributes:
        fraction: 0..1 of the whole run.
        message: a human-readable status line.
        stage: ``loading``, ``training``, ``validating``, ``storing`` or ``done``.
        fold: the walk-forward fold being trained (0-based) and ``folds`` their number.
        timesteps, total_timesteps: env steps of the current fold.
        eta_seconds: estimated seconds left (None when unknown).
        latest_reward: mean reward of the last finished episodes.
        fps: env steps per second.
    """

    fraction: float
    message: str
    stage: str
    fold: int = 0
    folds: int = 1
    timesteps: int = 0
    total_timesteps: int = 0
    eta_seconds: float | None = None
    latest_reward: float | None = None
    fps: float = 0.0


@dataclass(frozen=True)
class TrainingResult:
    """What :func:`execute_training_run` returns.

    Attributes:
        run: the run in its final state.
        model_version: the registered version (None when cancelled or cancelled early).
        decision: the gate's decision (None when it did not run).
        windows: the validation windows' metrics (one per fold).
    """

    run: Run
    model_version: ModelVersion | None = None
    decision: GateDecision | None = None
    windows: tuple[WindowEvaluation, ...] = ()


# -- submit ------------------------------------------------------------------------------------


def submit_training(
    request: TrainRequest | Mapping[str, Any],
    *,
    runs: RunRepository,
    bars: BarRepository,
    store: ObjectStore,
    models: ModelRegistry | None = None,
    launcher: JobLauncher | None = None,
    owner: str = "local",
) -> Run:
    """Validate, record as a queued ``train`` run, then launch (when a launcher is given).

    Returns:
        The run (``queued``; with a launcher, its execution name is recorded).

    Raises:
        ValidationError: the request is invalid; nothing was written.
        TransientError: the launch failed; the run is recorded as failed with the reason.
    """
    req = request if isinstance(request, TrainRequest) else TrainRequest.parse(request)
    check_training_request(req, bars, models=models, owner=owner)
    return submit_run(
        req.to_config(),
        kind=RunKind.TRAIN,
        label="training",
        runs=runs,
        store=store,
        launcher=launcher,
        owner=owner,
        fields={"agent": req.agent, "symbols": list(req.symbols)},
        logger=log,
    )


# -- execute -----------------------------------------------------------------------------------


class _Reporter:
    """Writes progress to the run row and to an observer; answers "was it cancelled?"."""

    def __init__(
        self,
        runs: RunRepository,
        run_id: str,
        observer: Callable[[TrainingProgress], None] | None,
        job_log: JobLog | None,
    ) -> None:
        self.runs = runs
        self.run_id = run_id
        self.observer = observer
        self.job_log = job_log
        self.cancelled = False
        self._last_check = -math.inf

    def report(self, progress: TrainingProgress, *, check: bool = True) -> None:
        """Record ``progress`` (row first, then the observer); raise CancelledError if the
        owner asked to cancel (``check``)."""
        if self.job_log is not None and progress.stage != "training":
            self.job_log.line(f"[{progress.fraction:5.1%}] {progress.message}")
        try:
            cancel = self.runs.report_progress(
                self.run_id,
                min(progress.fraction, 0.99),
                eta_seconds=progress.eta_seconds,
                message=progress.message,
            )
            self.cancelled = self.cancelled or cancel
        except ConflictError:
            raise
        except Exception as exc:  # a missed progress write is not worth failing the run for
            log.warning("progress write failed", extra={"run_id": self.run_id, "error": str(exc)})
        if self.observer is not None:
            try:
                self.observer(progress)
            except Exception:  # a broken progress bar must not fail the run
                log.exception("progress observer failed")
        if check and self.cancelled:
            raise CancelledError(f"run {self.run_id} was cancelled by its owner")

    def should_cancel(self) -> bool:
        """Heartbeat; True once cancellation was requested. Called at every rollout end; the
        database is asked at most every ``_CANCEL_CHECK_S`` (tiny rollouts end hundreds of
        times a second)."""
        now = time.monotonic()
        if self.cancelled or now - self._last_check < _CANCEL_CHECK_S:
            return self.cancelled
        self._last_check = now
        try:
            self.cancelled = self.runs.heartbeat(self.run_id)
        except Exception as exc:
            log.warning("heartbeat failed", extra={"run_id": self.run_id, "error": str(exc)})
        return self.cancelled


def fold_windows(timestamps: np.ndarray, folds: int) -> list[tuple[np.datetime64, np.datetime64]]:
    """Cut sorted bar times into ``folds`` consecutive windows of about equal bar counts.

    Raises:
        ValidationError: fewer than two bars per fold.
    """
    import numpy as np

    ts = np.unique(np.asarray(timestamps, dtype="datetime64[ns]"))
    if folds < 1 or len(ts) < 2 * folds:
        raise ValidationError(
            f"{folds} walk-forward fold(s) need at least {2 * folds} validation bars; "
            f"found {len(ts)}"
        )
    return [(chunk[0], chunk[-1]) for chunk in np.array_split(ts, folds)]


def _iso64(ts: Any) -> str:
    import numpy as np

    return str(np.datetime64(ts, "s")) + "Z"


def execute_training_run(
    run_id: str,
    *,
    deps: TrainingDeps,
    execution: str | None = None,
    context: Mapping[str, Any] | None = None,
    restart: bool = False,
    capture_log: bool = False,
    on_progress: Callable[[TrainingProgress], None] | None = None,
    progress_interval_s: float = 2.0,
) -> TrainingResult:
    """Execute a queued training run to its end (what the Cloud Run Job does).

    Args:
        run_id: the run.
        deps: repositories, store, registry, trainer, engine (see :class:`TrainingDeps`).
        execution: Cloud Run execution name (or local description), recorded on the run.
        context: task context stamped into ``config.yaml`` (job, execution, attempt ...).
        restart: this is a retry of a task that died while running (Cloud Run attempt > 0).
        capture_log: write this run's lines and warnings to ``job.log`` in the object store.
        on_progress: also told every progress report (the CLI's progress bar).
        progress_interval_s: minimum seconds between training progress writes to the row.

    Returns:
        The :class:`TrainingResult`: ``succeeded`` (promoted or not), or ``cancelled``.

    Raises:
        ValidationError: the stored request is invalid (the run is marked failed, no work done).
        ConflictError: the run is not a queued training run.
        StocktradeError, Exception: anything else that failed (the run is marked failed).
    """

    def prepare(run: Run) -> TrainingPlan:
        request = TrainRequest.parse(run.config)
        return check_training_request(request, deps.bars, models=deps.models, owner=run.owner)

    def work(run: Run, plan: TrainingPlan, job_log: JobLog | None) -> TrainingResult:
        return _execute(
            run,
            plan,
            _Reporter(deps.runs, run.id, on_progress, job_log),
            deps=deps,
            execution=execution,
            context=context,
            progress_interval_s=progress_interval_s,
        )

    return execute_run(
        run_id,
        runs=deps.runs,
        store=deps.store,
        kind=RunKind.TRAIN,
        label="training",
        noun="a training run",
        prepare=prepare,
        work=work,
        wrap=TrainingResult,
        execution=execution,
        restart=restart,
        capture_log=capture_log,
        logger=log,
    )


def _execute(
    run: Run,
    plan: TrainingPlan,
    reporter: _Reporter,
    *,
    deps: TrainingDeps,
    execution: str | None,
    context: Mapping[str, Any] | None,
    progress_interval_s: float,
) -> TrainingResult:
    import numpy as np

    request = plan.request
    runs, store = deps.runs, deps.store
    started = time.monotonic()
    reporter.report(TrainingProgress(0.01, f"validated: agent {request.agent}", "loading"))
    _, _, val_lo, val_hi = request.bounds()
    loaded: dict[str, BarArrays] = {}
    for symbol in request.symbols:
        loaded[symbol] = deps.bars.load(symbol, request.timeframe, None, val_hi)
    val_ts = np.concatenate([b.between(_naive(val_lo), _naive(val_hi)).ts for b in loaded.values()])
    windows = fold_windows(val_ts, request.walk_forward_folds)
    reporter.report(
        TrainingProgress(
            _P_LOADED,
            f"loaded {sum(len(b) for b in loaded.values()):,} {request.timeframe} bars of "
            f"{', '.join(request.symbols)}",
            "loading",
        )
    )
    ppo = dict(plan.ppo)
    if "torch_threads" not in ppo and deps.torch_threads is not None:
        ppo["torch_threads"] = int(deps.torch_threads)
    backtest_config = backtest_config_for(plan.env)
    baselines_spec = request.gate.baselines
    folds = len(windows)
    evaluations: list[WindowEvaluation] = []
    outcome: Any = None
    fold_train_ends: list[str] = []
    fold_seconds: list[float] = []
    tb_files: dict[str, bytes] = {}
    for i, (lo, hi) in enumerate(windows):
        train_end = request.train_end if i == 0 else _iso64(windows[i - 1][1])
        fold_train_ends.append(train_end)
        span = (_P_TRAINED - _P_LOADED) / folds
        base = _P_LOADED + i * span
        fold_started = time.monotonic()

        def hook(p: Any, *, _i: int = i, _base: float = base, _span: float = span) -> None:
            left_folds = folds - _i - 1
            eta = p.eta_seconds
            if eta is not None and left_folds:
                eta += left_folds * (p.elapsed_seconds + eta)
            message = f"training {p.timesteps:,}/{p.total_timesteps:,} steps"
            if folds > 1:
                message = f"fold {_i + 1}/{folds}: " + message
            if p.latest_reward is not None and math.isfinite(p.latest_reward):
                message += f", reward {p.latest_reward:.4g}"
            message += f", {p.fps:,.0f} steps/s"
            reporter.report(
                TrainingProgress(
                    _base + _span * 0.95 * p.percent / 100.0,
                    message,
                    "training",
                    fold=_i,
                    folds=folds,
                    timesteps=p.timesteps,
                    total_timesteps=p.total_timesteps,
                    eta_seconds=eta,
                    latest_reward=p.latest_reward,
                    fps=p.fps,
                ),
                check=False,  # cancellation is the trainer's should_cancel
            )

        outcome = deps.trainer(
            [loaded[s] for s in request.symbols],
            train_start=request.train_start,
            train_end=train_end,
            timeframe=request.timeframe,
            env=request.env,
            ppo=ppo,
            features=request.features,
            observation=request.observation,
            parity_observations=request.parity_observations,
            on_progress=hook,
            should_cancel=reporter.should_cancel,
            progress_interval_s=progress_interval_s,
            workdir=deps.workdir,
            tb_run_name="ppo" if folds == 1 else f"fold{i + 1}",
            extra_manifest={
                "run_id": run.id,
                "agent": request.agent,
                "owner": run.owner,
                "fold": i,
                "folds": folds,
                "validation": {"start": _iso64(lo), "end": _iso64(hi)},
            },
        )
        tb_files.update(outcome.tensorboard_files)
        fold_seconds.append(time.monotonic() - fold_started)
        if outcome.cancelled:
            raise CancelledError(
                f"run {run.id} was cancelled by its owner after {outcome.timesteps:,} steps"
            )
        policy = deps.policy_factory(outcome.onnx, outcome.manifest)
        baselines = _baselines(baselines_spec)
        evaluations.append(
            evaluate_window(
                policy,
                loaded,
                start=lo,
                end=hi,
                config=backtest_config,
                baselines=baselines,
                engine=deps.engine,
                history_bars=request.gate.history_bars,
                min_history=plan.policy_warmup,
            )
        )
        reporter.report(
            TrainingProgress(
                base + span,
                f"fold {i + 1}/{folds} trained ({outcome.timesteps:,} steps, "
                f"{outcome.fps:,.0f} steps/s) and backtested on {_iso64(lo)[:10]} .. "
                f"{_iso64(hi)[:10]}",
                "validating",
                fold=i,
                folds=folds,
            )
        )
    assert outcome is not None
    # -- store the artifacts of the final policy ------------------------------------------------
    prefix = f"runs/{run.id}"
    uris = {
        ONNX_NAME: store.put_bytes(f"{prefix}/{ONNX_NAME}", outcome.onnx),
        SB3_NAME: store.put_bytes(f"{prefix}/{SB3_NAME}", outcome.sb3, "application/zip"),
        MANIFEST_NAME: store.put_bytes(
            f"{prefix}/{MANIFEST_NAME}",
            json.dumps(outcome.manifest, indent=2, sort_keys=True).encode("utf-8"),
            "application/json",
        ),
    }
    for rel, data in sorted(tb_files.items()):
        store.put_bytes(f"{prefix}/tensorboard/{rel}", data)
    uris["tensorboard"] = store.uri(f"{prefix}/tensorboard/")
    snapshot = _snapshot(
        run, plan, ppo, loaded, windows, fold_train_ends,
        {"execution": execution, **dict(context or {})},
    )  # fmt: skip
    uris[CONFIG_NAME] = _put_yaml(store, f"{prefix}/{CONFIG_NAME}", snapshot)
    reporter.report(TrainingProgress(_P_STORED, "policy exported and stored", "storing"))
    # -- register, gate, promote ----------------------------------------------------------------
    sha = outcome.manifest["files"][ONNX_NAME]["sha256"]
    version = deps.models.register(
        agent_name=request.agent,
        run_id=run.id,
        uri_onnx=uris[ONNX_NAME],
        uri_sb3=uris[SB3_NAME],
        manifest=outcome.manifest,
        sha256=sha,
    )
    policy_metrics = aggregate_metrics([e.policy for e in evaluations])
    baseline_metrics = {
        name: aggregate_metrics([e.baselines[name] for e in evaluations]) for name in baselines_spec
    }
    decision = decide(
        policy_metrics, baseline_metrics, metric=request.gate.metric, margin=request.gate.margin
    )
    version = apply_gate(
        version,
        decision,
        models=deps.models,
        gate_config=request.gate,
        windows=evaluations,
        policy_metrics=policy_metrics,
        baseline_metrics=baseline_metrics,
        relay=deps.relay,
    )
    assert version.gate is not None
    uris[VALIDATION_NAME] = store.put_bytes(
        f"{prefix}/{VALIDATION_NAME}",
        json.dumps(
            {"model_version_id": version.id, "version": version.version, **version.gate},
            indent=2,
            sort_keys=True,
        ).encode("utf-8"),
        "application/json",
    )
    if reporter.job_log is not None:
        uris[JOB_LOG_NAME] = store.uri(f"{prefix}/{JOB_LOG_NAME}")
        reporter.job_log.line(f"gate {version.gate['decision']}: {decision.reason}")
    metrics = _run_metrics(outcome, version, decision, policy_metrics, fold_seconds, started)
    summary = f"trained {version.label}; gate {version.gate['decision']}: {decision.reason}"
    done = runs.succeed(run.id, metrics=metrics, artifacts=uris, message=summary[:500])
    if reporter.observer is not None:
        with contextlib.suppress(Exception):
            reporter.observer(TrainingProgress(1.0, summary, "done", folds=folds))
    return TrainingResult(done, version, decision, tuple(evaluations))


def _naive(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat()


def _baselines(spec: Mapping[str, Mapping[str, Any]]) -> dict[str, Strategy]:
    from stocktrade.services.backtest_runs import build_strategy

    return {name: build_strategy(name, params) for name, params in spec.items()}


def _run_metrics(
    outcome: Any,
    version: ModelVersion,
    decision: GateDecision,
    policy_metrics: Mapping[str, float],
    fold_seconds: Sequence[float],
    started: float,
) -> dict[str, Any]:
    """The run row's metrics: the policy's validation metrics plus training facts."""
    metrics: dict[str, Any] = {k: v for k, v in policy_metrics.items()}
    metrics.update(
        {
            "timesteps": outcome.timesteps,
            "train_seconds": outcome.seconds,
            "fps": outcome.fps,
            "latest_reward": outcome.latest_reward,
            "parity_max_abs_logit_diff": outcome.parity.get("max_abs_logit_diff"),
            "onnx_sha256": version.sha256,
            "model_version_id": version.id,
            "model_version": version.version,
            "agent": version.agent_name,
            "gate_decision": (version.gate or {}).get("decision"),
            "gate_passed": decision.passed,
            "gate_metric": decision.metric,
            "gate_margin": decision.margin,
            "gate_difference": decision.difference,
            "gate_best_baseline": decision.best_baseline,
            "gate_best_baseline_value": decision.best_baseline_value,
            "folds_seconds": list(fold_seconds),
            "wall_seconds": time.monotonic() - started,
        }
    )
    return metrics


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("stocktrade", "numpy", "numba", "torch", "stable-baselines3", "onnxruntime"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not-installed"
    return out


def _snapshot(
    run: Run,
    plan: TrainingPlan,
    ppo: Mapping[str, Any],
    data: Mapping[str, BarArrays],
    windows: Sequence[tuple[Any, Any]],
    train_ends: Sequence[str],
    execution: Mapping[str, Any],
) -> dict[str, Any]:
    """The merged config stamped into config.yaml: enough to train the policy again."""
    return {
        "run_id": run.id,
        "kind": "train",
        "owner": run.owner,
        "created_at": None if run.created_at is None else _text(run.created_at),
        "request": plan.request.to_config(),
        "resolved": {"env": dict(plan.env), "ppo": dict(ppo)},
        "folds": [
            {
                "train_start": plan.request.train_start,
                "train_end": end,
                "validation_start": _iso64(lo),
                "validation_end": _iso64(hi),
            }
            for (lo, hi), end in zip(windows, train_ends, strict=True)
        ],
        "data": {
            "timeframe": plan.request.timeframe,
            "source": "postgres bars",
            "symbols": {
                s: {"first": _iso64(b.ts[0]), "last": _iso64(b.ts[-1]), "bars": len(b)}
                for s, b in data.items()
                if len(b)
            },
        },
        "execution": dict(execution),
        "versions": _versions(),
    }


def _put_yaml(store: ObjectStore, key: str, document: Mapping[str, Any]) -> str:
    import yaml

    text = yaml.safe_dump(json.loads(json.dumps(document, default=str)), sort_keys=False)
    return store.put_bytes(key, text.encode("utf-8"), "application/yaml")


def run_training_now(
    request: TrainRequest | Mapping[str, Any],
    *,
    deps: TrainingDeps,
    owner: str = "local",
    on_progress: Callable[[TrainingProgress], None] | None = None,
    progress_interval_s: float = 2.0,
) -> TrainingResult:
    """Submit and execute in this process (records the run and writes ``job.log`` too).

    Raises:
        ValidationError: the request is invalid (nothing written).
        Exception: the run failed (it is recorded as failed with the reason).
    """
    run = submit_training(
        request,
        runs=deps.runs,
        bars=deps.bars,
        store=deps.store,
        models=deps.models,
        owner=owner,
    )
    return execute_training_run(
        run.id,
        deps=deps,
        execution=f"in-process pid={os.getpid()}",
        context={"mode": "in-process"},
        capture_log=True,
        on_progress=on_progress,
        progress_interval_s=progress_interval_s,
    )
