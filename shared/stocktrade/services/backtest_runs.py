"""Backtest runs: accept a request, launch or execute it, record the outcome.

Three use cases, the same code behind the CLI, the HTTP API and the Cloud Run Job:

* :func:`submit_backtest` validates the request **before anything is written** (unknown
  strategy or symbol, bad parameters, negative fees, ``from`` after ``to``, a range with no
  bars: :class:`~stocktrade.errors.ValidationError`, nothing changed), records it as a
  ``queued`` run, and only then hands it to a :class:`~stocktrade.ports.JobLauncher` (if
  given). An accepted request is therefore never lost: if the launch fails, the run is marked
  failed with the reason and the request stays in the row.
* :func:`execute_backtest_run` is what the job runs: it validates the stored request again
  before any work (data can change between submit and execute; a bad request marks the run
  failed with the message), marks it running, loads the bars, runs the engine, writes the
  artifacts (:mod:`stocktrade.backtest.artifacts`), stores the metrics and exact money, and
  marks it succeeded. Any error marks it failed with the message and is raised again (so a
  job exits non-zero). A cancel request is honoured at the next checkpoint (between symbols
  and stages), leaving the run ``cancelled``.
* :func:`run_backtest_now` submits and executes in this process (the CLI default, the demo).

The engine is passed in (``engine=stocktrade.backtest.engine.run_backtest``) by the
composition root: services never import adapters, and the engine uses the simulated broker.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
import platform
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from stocktrade.backtest.artifacts import (
    artifact_key,
    money_summary,
    run_prefix,
    stored_metrics,
    write_backtest_artifacts,
)
from stocktrade.backtest.config import BacktestConfig, parse_utc
from stocktrade.domain.bars import Timeframe
from stocktrade.domain.runs import Run, RunKind
from stocktrade.errors import (
    CancelledError,
    ValidationError,
)
from stocktrade.logging import get_logger
from stocktrade.services.run_lifecycle import JobLog, execute_run, submit_run
from stocktrade.strategies.baselines import BuyAndHold, RsiMeanReversion, SmaCrossover

if TYPE_CHECKING:
    from stocktrade.backtest.result import BacktestResult
    from stocktrade.data.arrays import BarArrays
    from stocktrade.ports import BarRepository, JobLauncher, ObjectStore, RunRepository
    from stocktrade.strategies.base import Strategy

__all__ = [
    "STRATEGIES",
    "BacktestEngine",
    "BacktestPlan",
    "BacktestRequest",
    "build_strategy",
    "canonical_strategy",
    "check_request",
    "execute_backtest_run",
    "run_backtest_now",
    "strategy_names",
    "submit_backtest",
]

log = get_logger(__name__)

#: The engine: ``(bars by symbol, strategy, config) -> BacktestResult``.
BacktestEngine = Callable[["Mapping[str, BarArrays]", "Strategy", BacktestConfig], "BacktestResult"]

#: Strategies a request may name -> their class. Parameters are the constructor's keywords.
STRATEGIES: dict[str, type] = {
    "buy_and_hold": BuyAndHold,
    "sma_crossover": SmaCrossover,
    "rsi_mean_reversion": RsiMeanReversion,
}
_ALIASES = {
    "buy-and-hold": "buy_and_hold",
    "buyhold": "buy_and_hold",
    "sma": "sma_crossover",
    "sma-crossover": "sma_crossover",
    "rsi": "rsi_mean_reversion",
    "rsi-mean-reversion": "rsi_mean_reversion",
}
_SYMBOL = re.compile(r"^[A-Za-z0-9^][A-Za-z0-9.^=_/-]{0,31}$")
_MAX_SYMBOLS = 100
#: BacktestConfig fields a request may set under ``options`` (the rest have their own keys).
_OPTIONS = (
    "cash_allocation",
    "fill_rule",
    "whole_shares",
    "close_at_end",
    "mode",
    "periods_per_year",
)
_REQUEST_KEYS = (
    "strategy",
    "params",
    "symbols",
    "start",
    "end",
    "timeframe",
    "initial_cash",
    "costs",
    "risk",
    "options",
)
_HEARTBEAT_S = 15.0


def strategy_names() -> list[str]:
    """Strategies a request may name."""
    return sorted(STRATEGIES)


def canonical_strategy(name: str) -> str:
    """The registered name of a strategy (``"rsi"`` -> ``"rsi_mean_reversion"``); unknown
    names come back stripped and lower-cased."""
    key = str(name).strip().lower()
    return _ALIASES.get(key, key)


def _strategy_class(name: str) -> tuple[str, type]:
    key = canonical_strategy(name)
    if key not in STRATEGIES:
        raise ValidationError(
            f"unknown strategy {name!r}; expected one of {', '.join(strategy_names())}"
        )
    return key, STRATEGIES[key]


def _coerce(value: Any, default: Any, name: str) -> Any:
    """Make a parameter the type of its default (``"10"`` -> 10 for an int window, ...)."""
    if default is inspect.Parameter.empty or default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValidationError(f"parameter {name} must be true or false, found {value!r}")
    if isinstance(default, int):
        if isinstance(value, bool):
            raise ValidationError(f"parameter {name} must be an integer, found {value!r}")
        if isinstance(value, int):
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValidationError(f"parameter {name} must be an integer, found {value!r}") from None
        if not number.is_integer():
            raise ValidationError(f"parameter {name} must be an integer, found {value!r}")
        return int(number)
    if isinstance(default, float):
        if isinstance(value, bool):
            raise ValidationError(f"parameter {name} must be a number, found {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValidationError(f"parameter {name} must be a number, found {value!r}") from None
    return value


@functools.lru_cache(maxsize=64)
def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    # inspect.signature is slow; the live chain rebuilds thousands of strategies at once.
    return dict(inspect.signature(cls).parameters)


def build_strategy(name: str, params: Mapping[str, Any] | None = None) -> Strategy:
    """A strategy from its name and parameters, validated.

    Raises:
        ValidationError: unknown strategy, unknown parameter, or a bad value.
    """
    key, cls = _strategy_class(name)
    params = dict(params or {})
    accepted = _parameters(cls)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValidationError(
            f"unknown parameter(s) {unknown} for strategy {key}; expected a subset of "
            f"{sorted(accepted)}"
        )
    kwargs = {n: _coerce(v, accepted[n].default, n) for n, v in params.items()}
    try:
        return cls(**kwargs)  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise ValidationError(f"bad parameters for strategy {key}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"bad parameters for strategy {key}: {exc}") from exc


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _bound_text(value: datetime | None, *, end: bool) -> str | None:
    """A range bound as stored: a plain date when it is a whole-day bound (what users type)."""
    if value is None:
        return None
    day_edge = (value.hour, value.minute, value.second, value.microsecond) == (
        (23, 59, 59, 999_999) if end else (0, 0, 0, 0)
    )
    return value.date().isoformat() if day_edge else _iso(value)


def _parse_bound(value: Any, name: str, *, end: bool) -> datetime | None:
    """A range bound; a plain date as ``end`` means the whole day (inclusive)."""
    if value is None or value == "":
        return None
    is_day = (isinstance(value, date) and not isinstance(value, datetime)) or (
        isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()) is not None
    )
    parsed = parse_utc(value, name)
    assert parsed is not None
    if end and is_day:
        parsed = parsed + timedelta(days=1) - timedelta(microseconds=1)
    return parsed


@dataclass(frozen=True)
class BacktestRequest:
    """What a user asks for (CLI flags, API body, the ``runs.config`` of a backtest run).

    Attributes:
        strategy: a name of :data:`STRATEGIES` (``sma_crossover``, ...).
        symbols: symbols to trade (each its own book).
        start, end: inclusive range (UTC); a plain date as ``end`` includes that whole day;
            ``None`` means from the first / to the last stored bar.
        params: strategy parameters (constructor keywords, e.g. ``{"fast": 10, "slow": 30}``).
        timeframe: bar timeframe (``1d``, ``1h``, ``15m``, ``5m``, ``1m``).
        initial_cash: starting cash (exact).
        costs: :class:`~stocktrade.domain.costs.CostModel` fields (``commission_bps``, ...).
        risk: :class:`~stocktrade.domain.risk.RiskLimits` fields (``allow_short``, ...).
        options: other :class:`~stocktrade.backtest.config.BacktestConfig` fields
            (``fill_rule``, ``cash_allocation``, ``close_at_end``, ``whole_shares``, ``mode``).
    """

    strategy: str
    symbols: tuple[str, ...]
    start: datetime | None = None
    end: datetime | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    timeframe: str = "1d"
    initial_cash: Decimal = Decimal("100000")
    costs: Mapping[str, Any] = field(default_factory=dict)
    risk: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BacktestRequest:
        """Parse a JSON-style request (unknown keys are errors; ``from``/``to`` are accepted
        for ``start``/``end``).

        Raises:
            ValidationError: a field is missing or malformed (all problems in one message).
        """
        if not isinstance(data, Mapping):
            raise ValidationError(
                f"backtest request must be an object, found {type(data).__name__}"
            )
        data = dict(data)
        for alias, key in (("from", "start"), ("to", "end")):
            if alias in data:
                if key in data:
                    raise ValidationError(f"give either {alias!r} or {key!r}, not both")
                data[key] = data.pop(alias)
        problems: list[str] = []
        unknown = sorted(set(data) - set(_REQUEST_KEYS))
        if unknown:
            problems.append(
                f"unknown field(s) {unknown}; expected a subset of {list(_REQUEST_KEYS)}"
            )
        strategy = data.get("strategy")
        if not isinstance(strategy, str) or not strategy.strip():
            problems.append(
                f"strategy must be a name ({', '.join(strategy_names())}), found {strategy!r}"
            )
        raw_symbols = data.get("symbols")
        if isinstance(raw_symbols, str):
            raw_symbols = raw_symbols.split(",")
        symbols: tuple[str, ...] = ()
        if not isinstance(raw_symbols, (list, tuple)) or not raw_symbols:
            problems.append(f"symbols must be a non-empty list, found {raw_symbols!r}")
        else:
            symbols = tuple(str(s).strip() for s in raw_symbols)
            bad = [s for s in symbols if not _SYMBOL.match(s)]
            if bad:
                problems.append(
                    f"malformed symbol(s) {bad}: expected 1-32 letters, digits or .^=_/-"
                )
            dupes = sorted({s for s in symbols if symbols.count(s) > 1})
            if dupes:
                problems.append(f"symbols repeat: {dupes}")
            if len(symbols) > _MAX_SYMBOLS:
                problems.append(
                    f"at most {_MAX_SYMBOLS} symbols per backtest, found {len(symbols)}"
                )
        start = end = None
        try:
            start = _parse_bound(data.get("start"), "start (from)", end=False)
        except ValidationError as exc:
            problems.append(str(exc))
        try:
            end = _parse_bound(data.get("end"), "end (to)", end=True)
        except ValidationError as exc:
            problems.append(str(exc))
        if start is not None and end is not None and start > end:
            problems.append(
                f"the date range is empty: from {_bound_text(start, end=False)} is after to "
                f"{_bound_text(end, end=True)}"
            )
        timeframe = str(data.get("timeframe") or "1d")
        try:
            timeframe = Timeframe.parse(timeframe).value
        except ValueError as exc:
            problems.append(str(exc))
        cash_raw = data.get("initial_cash", "100000")
        try:
            cash = Decimal(str(cash_raw))
            if not cash.is_finite() or cash <= 0:
                raise ArithmeticError
        except ArithmeticError:
            problems.append(f"initial_cash must be a finite amount > 0, found {cash_raw!r}")
            cash = Decimal("100000")
        mappings: dict[str, dict[str, Any]] = {}
        for key in ("params", "costs", "risk", "options"):
            value = data.get(key) or {}
            if not isinstance(value, Mapping):
                problems.append(f"{key} must be an object, found {type(value).__name__}")
                value = {}
            mappings[key] = dict(value)
        bad_options = sorted(set(mappings["options"]) - set(_OPTIONS))
        if bad_options:
            problems.append(
                f"unknown option(s) {bad_options}; expected a subset of {list(_OPTIONS)}"
            )
        if problems:
            raise ValidationError("invalid backtest request: " + "; ".join(problems))
        assert isinstance(strategy, str)
        return cls(
            strategy=canonical_strategy(strategy),
            symbols=symbols,
            start=start,
            end=end,
            params=mappings["params"],
            timeframe=timeframe,
            initial_cash=cash,
            costs=mappings["costs"],
            risk=mappings["risk"],
            options=mappings["options"],
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (:meth:`from_dict` reads it back unchanged)."""
        return {
            "strategy": self.strategy,
            "symbols": list(self.symbols),
            "start": _bound_text(self.start, end=False),
            "end": _bound_text(self.end, end=True),
            "params": dict(self.params),
            "timeframe": self.timeframe,
            "initial_cash": str(self.initial_cash),
            "costs": {k: str(v) if isinstance(v, Decimal) else v for k, v in self.costs.items()},
            "risk": {k: str(v) if isinstance(v, Decimal) else v for k, v in self.risk.items()},
            "options": dict(self.options),
        }

    def to_config(self) -> BacktestConfig:
        """The engine config (validated: negative fees, bad risk limits ... raise).

        Raises:
            ValidationError: a cost, risk or option value is invalid.
        """
        return BacktestConfig.from_dict(
            {
                "initial_cash": self.initial_cash,
                "symbols": list(self.symbols),
                "start": self.start,
                "end": self.end,
                "costs": dict(self.costs),
                "risk": dict(self.risk),
                **dict(self.options),
            }
        )


@dataclass(frozen=True)
class BacktestPlan:
    """A validated request: the strategy object, the engine config, the stored ranges."""

    request: BacktestRequest
    strategy: Strategy
    config: BacktestConfig
    coverage: dict[str, tuple[datetime, datetime, int]]


def check_request(request: BacktestRequest, bars: BarRepository) -> BacktestPlan:
    """Validate a request against the code (strategy, parameters, config) and the stored data
    (every symbol has bars of the timeframe inside the range). Reads only a summary and a count
    of the stored bars: no bars are loaded.

    Raises:
        ValidationError: what is wrong, all in one message where possible.
    """
    problems: list[str] = []
    strategy: Strategy | None = None
    config: BacktestConfig | None = None
    try:
        strategy = build_strategy(request.strategy, request.params)
    except ValidationError as exc:
        problems.append(str(exc))
    try:
        config = request.to_config()
    except ValidationError as exc:
        problems.append(str(exc))
    summaries = {(s.symbol, s.timeframe): s for s in bars.summary(list(request.symbols))}
    coverage: dict[str, tuple[datetime, datetime, int]] = {}
    missing = [s for s in request.symbols if (s, request.timeframe) not in summaries]
    if missing:
        problems.append(_unknown_symbols_message(missing, request.timeframe, bars))
    for symbol in request.symbols:
        summary = summaries.get((symbol, request.timeframe))
        if summary is None:
            continue
        first, last = summary.first, summary.last
        outside = (request.start is not None and last < request.start) or (
            request.end is not None and first > request.end
        )
        # An index-only count: catches a range inside the stored history that holds no bar
        # (a weekend, a holiday) without loading anything.
        if outside or bars.count(symbol, request.timeframe, request.start, request.end) == 0:
            problems.append(
                f"no {request.timeframe} bars for {symbol} between "
                f"{_bound_text(request.start, end=False) or 'the first bar'} and "
                f"{_bound_text(request.end, end=True) or 'the last bar'}: stored bars run from "
                f"{_bound_text(first, end=False)} to {_bound_text(last, end=False)}"
            )
        coverage[symbol] = (first, last, summary.bars)
    if problems:
        raise ValidationError("invalid backtest request: " + "; ".join(problems))
    assert strategy is not None and config is not None
    return BacktestPlan(request, strategy, config, coverage)


def _unknown_symbols_message(missing: Sequence[str], timeframe: str, bars: BarRepository) -> str:
    known = sorted({s.symbol for s in bars.summary() if s.timeframe == timeframe})
    hints = []
    lower = {k.lower(): k for k in known}
    for s in missing:
        close = difflib.get_close_matches(s.lower(), list(lower), n=2, cutoff=0.6)
        if close:
            hints.append(f"{s}: did you mean {' or '.join(lower[c] for c in close)}?")
    shown = ", ".join(known[:30]) + (" ..." if len(known) > 30 else "")
    message = f"unknown symbol(s) {list(missing)}: no {timeframe} bars stored"
    message += (
        f" (stored: {shown})" if known else " (no bars are stored; run stocktrade data import)"
    )
    if hints:
        message += "; " + " ".join(hints)
    return message


# -- submit ------------------------------------------------------------------------------------


def submit_backtest(
    request: BacktestRequest | Mapping[str, Any],
    *,
    runs: RunRepository,
    bars: BarRepository,
    store: ObjectStore,
    launcher: JobLauncher | None = None,
    owner: str = "local",
) -> Run:
    """Validate, record as a queued run, then launch (when a launcher is given).

    Returns:
        The run (``queued``; with a launcher, its execution name is recorded).

    Raises:
        ValidationError: the request is invalid; nothing was written.
        TransientError: the launch failed; the run is recorded as failed with the reason.
    """
    req = request if isinstance(request, BacktestRequest) else BacktestRequest.from_dict(request)
    check_request(req, bars)
    return submit_run(
        req.to_dict(),
        kind=RunKind.BACKTEST,
        label="backtest",
        runs=runs,
        store=store,
        launcher=launcher,
        owner=owner,
        fields={"strategy": req.strategy, "symbols": list(req.symbols)},
        logger=log,
    )


# -- execute -----------------------------------------------------------------------------------


class _Progress:
    """Progress, ETA and cancel checks of one running run."""

    def __init__(self, runs: RunRepository, run_id: str, job_log: JobLog | None) -> None:
        self.runs = runs
        self.run_id = run_id
        self.job_log = job_log
        self.started = time.monotonic()

    def step(self, fraction: float, message: str) -> None:
        """Record progress; raise CancelledError if the owner asked to cancel."""
        elapsed = time.monotonic() - self.started
        eta = elapsed * (1 - fraction) / fraction if fraction >= 0.05 else None
        log.info(message, extra={"run_id": self.run_id, "progress": round(fraction, 3)})
        if self.job_log is not None:
            self.job_log.line(f"[{fraction:5.1%}] {message}")
        if self.runs.report_progress(self.run_id, fraction, eta_seconds=eta, message=message):
            raise CancelledError(f"run {self.run_id} was cancelled by its owner")


class _Heartbeat:
    """Background heartbeats while a long step (the engine) runs."""

    def __init__(self, runs: RunRepository, run_id: str, interval: float) -> None:
        self.runs = runs
        self.run_id = run_id
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self._loop, name=f"heartbeat-{run_id[:8]}", daemon=True
        )

    def _loop(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.runs.heartbeat(self.run_id)
            except Exception as exc:  # a missed heartbeat is not worth failing the run for
                log.warning("heartbeat failed", extra={"run_id": self.run_id, "error": str(exc)})

    def __enter__(self) -> _Heartbeat:
        if self.interval > 0:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("stocktrade", "numpy", "pandas", "numba"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not-installed"
    return out


def _snapshot(
    run: Run, plan: BacktestPlan, data: Mapping[str, BarArrays], execution: Mapping[str, Any]
) -> dict[str, Any]:
    """The merged config stamped into config.yaml: enough to run the backtest again."""
    import numpy as np

    def ts(x: Any) -> str:
        return str(np.datetime64(x, "s")) + "Z"

    return {
        "run_id": run.id,
        "kind": "backtest",
        "owner": run.owner,
        "created_at": _iso(run.created_at),
        "request": plan.request.to_dict(),
        "strategy": {"name": plan.strategy.name, "params": plan.strategy.params()},
        "engine": plan.config.to_dict(),
        "data": {
            "timeframe": plan.request.timeframe,
            "source": "postgres bars",
            "symbols": {
                s: {"first": ts(b.ts[0]), "last": ts(b.ts[-1]), "bars": len(b)}
                for s, b in data.items()
            },
        },
        "execution": dict(execution),
        "versions": _versions(),
    }


def execute_backtest_run(
    run_id: str,
    *,
    runs: RunRepository,
    bars: BarRepository,
    store: ObjectStore,
    engine: BacktestEngine,
    execution: str | None = None,
    context: Mapping[str, Any] | None = None,
    restart: bool = False,
    capture_log: bool = False,
    heartbeat_seconds: float = _HEARTBEAT_S,
) -> Run:
    """Execute a queued backtest run to its end (what the Cloud Run Job does).

    Args:
        run_id: the run.
        runs, bars, store: the run repository, the stored bars, the object store.
        engine: :func:`stocktrade.backtest.engine.run_backtest` (injected).
        execution: Cloud Run execution name (or local description), recorded on the run.
        context: task context stamped into config.yaml (job, execution, task index, attempt).
        restart: this is a retry of a task that died while running (Cloud Run attempt > 0).
        capture_log: write this run's lines and warnings to ``job.log`` in the object store
            (in-process runs and jobs launched with ``--write-job-log``).
        heartbeat_seconds: interval of background heartbeats while the engine runs (0: none).

    Returns:
        The finished run: ``succeeded``, or ``cancelled`` when its owner cancelled it.

    Raises:
        ValidationError: the stored request is invalid (the run is marked failed, no work done).
        ConflictError: the run is not a queued backtest (already running or finished).
        StocktradeError, Exception: anything else that failed (the run is marked failed).
    """

    def prepare(run: Run) -> BacktestPlan:
        return check_request(BacktestRequest.from_dict(run.config), bars)

    def work(run: Run, plan: BacktestPlan, job_log: JobLog | None) -> Run:
        return _execute(
            run,
            plan,
            _Progress(runs, run.id, job_log),
            runs=runs,
            bars=bars,
            store=store,
            engine=engine,
            execution=execution,
            context=context,
            job_log=job_log,
            heartbeat_seconds=heartbeat_seconds,
        )

    return execute_run(
        run_id,
        runs=runs,
        store=store,
        kind=RunKind.BACKTEST,
        label="backtest",
        noun="a backtest",
        prepare=prepare,
        work=work,
        wrap=lambda run: run,
        execution=execution,
        restart=restart,
        capture_log=capture_log,
        logger=log,
    )


def _execute(
    run: Run,
    plan: BacktestPlan,
    progress: _Progress,
    *,
    runs: RunRepository,
    bars: BarRepository,
    store: ObjectStore,
    engine: BacktestEngine,
    execution: str | None,
    context: Mapping[str, Any] | None,
    job_log: JobLog | None,
    heartbeat_seconds: float,
) -> Run:
    request = plan.request
    n = len(request.symbols)
    data: dict[str, BarArrays] = {}
    progress.step(0.02, f"validated: {request.strategy} on {', '.join(request.symbols)}")
    for i, symbol in enumerate(request.symbols):
        loaded = bars.load(symbol, request.timeframe, request.start, request.end)
        if len(loaded) == 0:
            raise ValidationError(
                f"no {request.timeframe} bars for {symbol} between {_bound_text(request.start, end=False)} and "
                f"{_bound_text(request.end, end=True)}; check the date range"
            )
        data[symbol] = loaded
        progress.step(
            0.05 + 0.25 * (i + 1) / n,
            f"loaded {len(loaded):,} {request.timeframe} bars of {symbol}",
        )
    started = time.perf_counter()
    with _Heartbeat(runs, run.id, heartbeat_seconds):
        result = engine(data, plan.strategy, plan.config)
    seconds = time.perf_counter() - started
    total_bars = sum(len(b) for b in data.values())
    progress.step(0.8, f"engine ({result.path} path) ran {total_bars:,} bars in {seconds:.3f} s")
    snapshot = _snapshot(
        run,
        plan,
        data,
        {"execution": execution, **dict(context or {}), "engine_seconds": round(seconds, 6)},
    )
    uris = write_backtest_artifacts(
        store,
        run.id,
        result,
        config_snapshot=snapshot,
        title=f"Backtest {result.strategy_name}: {', '.join(request.symbols)}",
        subtitle=(
            f"run {run.id} · {request.timeframe} bars {_bound_text(request.start, end=False) or 'first'} → "
            f"{_bound_text(request.end, end=True) or 'last'} · {len(result.trades)} trades"
        ),
    )
    uris["job.log"] = store.uri(artifact_key(run.id, "job.log"))
    money = money_summary(result)
    metrics = stored_metrics(result)
    total = metrics.get("total_return")
    summary = "succeeded" if total is None else f"succeeded: total return {total:+.2%}"
    if job_log is not None:
        job_log.line(
            f"{summary}; final equity {money['final_equity']:.2f}; artifacts {run_prefix(run.id)}"
        )
    return runs.succeed(
        run.id,
        metrics=metrics,
        artifacts=uris,
        message=summary,
        money={k: money[k] for k in ("initial_cash", "final_equity", "total_fees")},
    )


def run_backtest_now(
    request: BacktestRequest | Mapping[str, Any],
    *,
    runs: RunRepository,
    bars: BarRepository,
    store: ObjectStore,
    engine: BacktestEngine,
    owner: str = "local",
) -> Run:
    """Submit and execute in this process (records the run and writes ``job.log`` too).

    Raises:
        ValidationError: the request is invalid (nothing written).
        Exception: the run failed (it is recorded as failed with the reason).
    """
    run = submit_backtest(request, runs=runs, bars=bars, store=store, owner=owner)
    return execute_backtest_run(
        run.id,
        runs=runs,
        bars=bars,
        store=store,
        engine=engine,
        execution=f"in-process pid={os.getpid()}",
        context={"mode": "in-process"},
        capture_log=True,
    )
