"""The promotion gate: a new policy serves its agent only if it beats the baselines.

After training, the new policy is backtested on the **validation** window (data it never
trained on, normalisation fitted before it) with the same engine, costs, fill rule and cash as
the baselines (buy-and-hold and an SMA crossover by default). The gate compares one metric
(``sharpe`` by default) and promotes the policy only if it beats the best baseline by more than
a margin (``0.0`` by default: strictly better)::

    promote  <=>  policy[metric] - max(baseline[metric]) > margin

Every metric the gate may use is "higher is better" (``max_drawdown`` is <= 0, so a smaller
fall is higher). An undefined policy value (NaN: e.g. a Sharpe ratio with no trades) is a
rejection; undefined baseline values are left out, and with no defined baseline at all the
policy is rejected (nothing shows it is better). The decision and both sides' metrics are
stored in ``model_versions.gate``.

Fair windows: each strategy gets the same bars of history before the validation window to warm
its indicators up (``RiskLimits.warmup_bars`` forbids orders there, so every book enters the
window flat and all cash), and the metrics are computed on the validation bars only.

Promotion retires the agent's previous promoted version in the same transaction and writes a
``ModelPromoted`` event to the transactional outbox with it; a relay (when one is wired)
publishes it right after the commit, otherwise the next relay pass does.

The engine, the policy strategy and the registry are passed in (services never import
adapters): see :mod:`stocktrade.bootstrap`.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from stocktrade.domain.model_versions import ModelStatus, ModelVersion
from stocktrade.errors import ValidationError
from stocktrade.logging import get_logger
from stocktrade.quant.metrics import compute_metrics, json_safe

if TYPE_CHECKING:
    from stocktrade.backtest.config import BacktestConfig
    from stocktrade.backtest.result import BacktestResult
    from stocktrade.data.arrays import BarArrays
    from stocktrade.strategies.base import Strategy

__all__ = [
    "DEFAULT_BASELINES",
    "GATE_METRICS",
    "GateConfig",
    "GateDecision",
    "ModelRegistry",
    "OutboxItem",
    "WindowEvaluation",
    "aggregate_metrics",
    "apply_gate",
    "backtest_config_for",
    "decide",
    "evaluate_window",
    "model_promoted_outbox",
    "promote_version",
    "window_metrics",
]

log = get_logger(__name__)

#: Metrics the gate may compare (all "higher is better").
GATE_METRICS = ("sharpe", "sortino", "total_return", "cagr", "calmar", "max_drawdown")
#: Baselines of the gate: strategy name (``stocktrade backtest`` names) -> parameters.
DEFAULT_BASELINES: dict[str, dict[str, Any]] = {
    "buy_and_hold": {},
    "sma_crossover": {"fast": 10, "slow": 30},
}
#: Metrics shown side by side in gate documents and tables.
SUMMARY_METRICS = (
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "max_drawdown",
    "annual_volatility",
    "n_trades",
    "exposure",
    "total_fees",
    "final_equity",
)


class GateConfig(BaseModel):
    """How the promotion gate decides (frozen; unknown fields are errors).

    Attributes:
        metric: the metric compared (one of :data:`GATE_METRICS`).
        margin: the policy must beat the best baseline by more than this (in metric units:
            0.1 Sharpe, or 0.02 = two points of total return).
        baselines: strategy name -> parameters (default: buy-and-hold and SMA 10/30).
        auto_promote: promote a version that passes; False records the decision only.
        history_bars: bars before the validation window given to every strategy to warm up
            (no orders there); at least what the policy's features need is used.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: Literal["sharpe", "sortino", "total_return", "cagr", "calmar", "max_drawdown"] = (
        "sharpe"
    )
    margin: float = 0.0
    baselines: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_BASELINES.items()}
    )
    auto_promote: bool = True
    history_bars: int = Field(default=260, ge=0, le=100_000)

    @field_validator("margin")
    @classmethod
    def _finite_margin(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"margin must be a finite number, found {value!r}")
        return value

    @field_validator("baselines")
    @classmethod
    def _some_baselines(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not value:
            raise ValueError("the gate needs at least one baseline strategy; found none")
        return value


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict on one policy.

    Attributes:
        passed: the policy beat the best baseline by more than the margin.
        metric: the metric compared.
        margin: the required margin.
        policy_value: the policy's value (None when undefined).
        best_baseline: name of the best baseline (None when no baseline is defined).
        best_baseline_value: its value.
        difference: ``policy_value - best_baseline_value`` (None when either is undefined).
        reason: one human-readable line (why, without the verdict).
    """

    passed: bool
    metric: str
    margin: float
    policy_value: float | None
    best_baseline: str | None
    best_baseline_value: float | None
    difference: float | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (non-finite values as None)."""
        return {
            "passed": self.passed,
            "metric": self.metric,
            "margin": self.margin,
            "policy_value": _finite_or_none(self.policy_value),
            "best_baseline": self.best_baseline,
            "best_baseline_value": _finite_or_none(self.best_baseline_value),
            "difference": _finite_or_none(self.difference),
            "reason": self.reason,
        }


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _value(metrics: Mapping[str, Any], metric: str) -> float | None:
    raw = metrics.get(metric)
    if raw is None:
        return None
    value = float(raw)
    return None if math.isnan(value) else value


def decide(
    policy: Mapping[str, Any],
    baselines: Mapping[str, Mapping[str, Any]],
    *,
    metric: str = "sharpe",
    margin: float = 0.0,
) -> GateDecision:
    """Decide whether a policy beats the best baseline on ``metric`` by more than ``margin``.

    Args:
        policy: the policy's metrics (``compute_metrics`` names).
        baselines: baseline name -> its metrics.
        metric: one of :data:`GATE_METRICS`.
        margin: required lead over the best baseline (finite).

    Returns:
        The :class:`GateDecision`. NaN or missing values count as undefined (see the module
        docs); infinities compare as numbers.

    Raises:
        ValidationError: unknown metric, non-finite margin, or no baselines given.
    """
    if metric not in GATE_METRICS:
        raise ValidationError(f"gate metric must be one of {list(GATE_METRICS)}; found {metric!r}")
    if not math.isfinite(margin):
        raise ValidationError(f"gate margin must be a finite number; found {margin!r}")
    if not baselines:
        raise ValidationError("the gate needs at least one baseline's metrics; found none")
    mine = _value(policy, metric)
    defined = {name: v for name, m in baselines.items() if (v := _value(m, metric)) is not None}
    best_name = max(defined, key=lambda n: defined[n]) if defined else None
    best = defined[best_name] if best_name is not None else None
    if mine is None:
        return GateDecision(
            False,
            metric,
            margin,
            None,
            best_name,
            best,
            None,
            f"the policy's {metric} is undefined on the validation window (e.g. it never traded)",
        )
    if best_name is None or best is None:
        return GateDecision(
            False,
            metric,
            margin,
            mine,
            None,
            None,
            None,
            f"no baseline has a defined {metric} to compare with",
        )
    difference = mine - best
    # inf - inf is NaN: equal infinities do not beat each other.
    passed = bool(not math.isnan(difference) and difference > margin)
    relation = ">" if passed else "<="
    reason = (
        f"policy {metric} {mine:.4g} - best baseline {best_name} {best:.4g} = "
        f"{difference:+.4g} {relation} margin {margin:g}"
    )
    return GateDecision(passed, metric, margin, mine, best_name, best, difference, reason)


# -- evaluation on a window --------------------------------------------------------------------


@dataclass(frozen=True)
class WindowEvaluation:
    """Policy and baseline metrics on one validation window.

    Attributes:
        start, end: first and last validation bar (ISO 8601 UTC).
        bars: validation bars on the portfolio's time grid.
        history_bars: warm-up bars each book saw before the window (no orders there).
        policy: the policy's metrics on the window.
        baselines: baseline name -> its metrics on the window.
    """

    start: str
    end: str
    bars: int
    history_bars: int
    policy: dict[str, float]
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN/inf as None)."""
        return {
            "start": self.start,
            "end": self.end,
            "bars": self.bars,
            "history_bars": self.history_bars,
            "policy": json_safe(dict(self.policy)),
            "baselines": {k: json_safe(dict(v)) for k, v in self.baselines.items()},
        }


def _ns(value: Any) -> np.datetime64:
    if isinstance(value, datetime) and value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return np.asarray(value, dtype="datetime64[ns]")[()]  # type: ignore[return-value]


def _iso(ts: Any) -> str:
    return str(np.asarray(ts, dtype="datetime64[s]")) + "Z"


def window_metrics(result: BacktestResult, start: Any) -> dict[str, float]:
    """Metrics of a backtest counted from ``start`` (the bars before it only warmed up).

    The same quantities as ``BacktestResult.metrics``, on the bars at or after ``start``:
    returns, exposure and turnover of those bars, every closed trade (no order can fall
    before ``start`` when the warm-up forbids them), fees, final equity.
    """
    ts = result.ts
    k = int(np.searchsorted(ts, _ns(start), "left"))
    if k >= len(ts):
        raise ValidationError(f"no backtest bars at or after {start}; the curve ends {ts[-1]}")
    equity = result.equity
    value = result.position_value
    base = float(equity[k - 1]) if k > 0 else float(result.initial_cash)
    eq = equity[k:]
    prev = np.concatenate(([base], eq[:-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = eq / prev - 1.0
        exposure = np.where(eq != 0, np.abs(value[k:]) / np.abs(eq), 0.0)
    notional = np.zeros(len(ts))
    fees = 0.0
    n_orders = 0
    for book in result.books.values():
        r = book.records
        done = (r.fill_bar >= 0) & (r.qty != 0)
        if done.any():
            at = np.searchsorted(ts, book.ts[r.fill_bar[done]])
            np.add.at(notional, at, np.abs(r.qty[done] * r.price[done]))
        fees += float(r.fee.sum())
        n_orders += len(r)
    pnls = np.array([float(t.pnl) for t in result.trades], dtype=np.float64)
    out = compute_metrics(
        returns,
        trade_pnls=pnls,
        traded_notional=notional[k:],
        equity=eq,
        exposure=exposure,
        periods=result.periods_per_year,
    )
    out["initial_cash"] = base
    out["final_equity"] = float(result.final_equity)
    out["total_fees"] = fees
    out["n_orders"] = float(n_orders)
    out["n_fills"] = float(len(result.fills))
    return out


def evaluate_window(
    policy: Strategy,
    bars: Mapping[str, BarArrays],
    *,
    start: Any,
    end: Any,
    config: BacktestConfig,
    baselines: Mapping[str, Strategy],
    engine: Callable[[Mapping[str, BarArrays], Strategy, BacktestConfig], BacktestResult],
    history_bars: int = 260,
    min_history: int = 0,
) -> WindowEvaluation:
    """Backtest the policy and the baselines on ``[start, end]`` under identical conditions.

    Args:
        policy: the candidate (an ``OnnxPolicyStrategy``).
        bars: symbol -> bars up to at least ``end`` (earlier bars are warm-up history).
        start, end: the validation window (inclusive; aware datetimes or ISO strings, UTC).
        config: costs, fill rule, cash and ``allow_short`` (its dates and warm-up are replaced).
        baselines: name -> baseline strategy.
        engine: :func:`stocktrade.backtest.engine.run_backtest`.
        history_bars: bars of history each book gets before ``start``.
        min_history: the policy's own warm-up; fewer stored history bars than this for a
            symbol is an error (the policy could not decide on the window's first bars).

    Raises:
        ValidationError: a symbol has no bars in the window or too little history.
    """
    lo, hi = _ns(start), _ns(end)
    cut: dict[str, BarArrays] = {}
    available: dict[str, int] = {}
    for symbol, series in bars.items():
        upto = series.between(None, hi)
        k = int(np.searchsorted(upto.ts, lo, "left"))
        if k >= len(upto):
            raise ValidationError(
                f"no {symbol} bars in the validation window {_iso(lo)} .. {_iso(hi)}"
            )
        available[symbol] = k
        cut[symbol] = upto
    short = {s: k for s, k in available.items() if k < min_history}
    if short:
        raise ValidationError(
            f"the policy needs {min_history} bars of history before the validation window; "
            f"found only {short}"
        )
    warm = min([max(history_bars, min_history), *available.values()])
    data = {s: b.slice(available[s] - warm, len(b)) for s, b in cut.items()}
    run_config = replace(config, start=None, end=None, risk=replace(config.risk, warmup_bars=warm))

    def run(strategy: Strategy) -> dict[str, float]:
        return window_metrics(engine(data, strategy, run_config), lo)

    policy_metrics = run(policy)
    baseline_metrics = {name: run(s) for name, s in baselines.items()}
    first = min(b.ts[warm] for b in data.values())
    last = max(b.ts[-1] for b in data.values())
    grid = np.unique(np.concatenate([b.ts[warm:] for b in data.values()]))
    return WindowEvaluation(
        start=_iso(first),
        end=_iso(last),
        bars=len(grid),
        history_bars=warm,
        policy=policy_metrics,
        baselines=baseline_metrics,
    )


def aggregate_metrics(windows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean of each metric over windows (walk-forward folds), skipping undefined values."""
    keys: list[str] = []
    for w in windows:
        keys.extend(k for k in w if k not in keys)
    out: dict[str, float] = {}
    for key in keys:
        values = [float(w[key]) for w in windows if w.get(key) is not None]
        finite = [v for v in values if not math.isnan(v)]
        out[key] = float(np.mean(finite)) if finite else math.nan
    return out


# -- the registry port and the state change ----------------------------------------------------


@dataclass(frozen=True)
class OutboxItem:
    """An event to store in the outbox in the same transaction as a state change."""

    topic: str
    event_id: str
    ordering_key: str | None
    payload: dict[str, Any]
    attributes: dict[str, str] = field(default_factory=dict)


class ModelRegistry(Protocol):
    """Model versions (the ``model_versions`` table)."""

    def register(
        self,
        *,
        agent_name: str,
        run_id: str | None,
        uri_onnx: str,
        uri_sb3: str | None,
        manifest: Mapping[str, Any],
        sha256: str,
    ) -> ModelVersion: ...

    def check_agent_owner(self, agent_name: str, owner: str) -> None: ...

    def get(self, version_id: str, *, owner: str | None = None) -> ModelVersion: ...

    def resolve(self, ref: str, *, owner: str | None = None) -> ModelVersion: ...

    def list(
        self,
        *,
        agent_name: str | None = None,
        status: str | None = None,
        owner: str | None = None,
        limit: int = 50,
    ) -> builtins.list[ModelVersion]: ...

    def promoted(self, agent_name: str) -> ModelVersion | None: ...

    def record_gate(
        self, version_id: str, gate: Mapping[str, Any], *, status: ModelStatus
    ) -> ModelVersion: ...

    def promote(
        self,
        version_id: str,
        *,
        promoted_at: datetime,
        gate: Mapping[str, Any] | None = None,
        outbox: Sequence[OutboxItem] = (),
    ) -> tuple[ModelVersion, builtins.list[ModelVersion]]: ...


def model_promoted_outbox(version: ModelVersion, promoted_at: datetime) -> list[OutboxItem]:
    """The ``ModelPromoted`` event of a promotion as an outbox item (none if the event schema
    is not available)."""
    try:
        from stocktrade.schemas.events import ModelPromoted, event_attributes
    except ImportError:  # pragma: no cover - the schema ships with the package
        log.warning("no ModelPromoted event schema; promotion is not published")
        return []
    event = ModelPromoted(
        model_version_id=version.id,  # type: ignore[arg-type]
        agent_id=version.agent_id,  # type: ignore[arg-type]
        agent_name=version.agent_name,
        version=version.version,
        uri_onnx=version.uri_onnx,
        sha256=version.sha256,
        promoted_at=promoted_at,
    )
    return [
        OutboxItem(
            topic=event.TOPIC.value,
            event_id=event.event_id,
            ordering_key=event.ordering_key,
            payload=event.model_dump(mode="json"),
            attributes=dict(event_attributes(event)),
        )
    ]


def _relay(relay: Callable[[], object] | None) -> bool:
    if relay is None:
        log.info("no event relay wired; ModelPromoted waits in the outbox for the next relay")
        return False
    try:
        relay()
    except Exception as exc:  # the promotion is committed; the outbox keeps the event
        log.warning(
            "could not publish ModelPromoted now; it stays in the outbox",
            extra={"error": f"{type(exc).__name__}: {exc}"},
        )
        return False
    return True


def promote_version(
    version_id: str,
    *,
    models: ModelRegistry,
    gate: Mapping[str, Any] | None = None,
    relay: Callable[[], object] | None = None,
    now: datetime | None = None,
) -> tuple[ModelVersion, list[ModelVersion]]:
    """Promote a version: retire the agent's current one, store ``gate``, queue the event.

    Returns:
        ``(promoted version, versions it retired)``.

    Raises:
        NotFoundError: no such version.
    """
    current = models.get(version_id)
    when = now or datetime.now(UTC)
    promoted_view = replace(current, status=ModelStatus.PROMOTED, promoted_at=when)
    version, retired = models.promote(
        version_id,
        promoted_at=when,
        gate=gate,
        outbox=model_promoted_outbox(promoted_view, when),
    )
    log.info(
        "model version promoted",
        extra={
            "model_version_id": version.id,
            "agent_name": version.agent_name,
            "version": version.version,
            "retired": [r.id for r in retired],
        },
    )
    _relay(relay)
    return version, retired


def apply_gate(
    version: ModelVersion,
    decision: GateDecision,
    *,
    models: ModelRegistry,
    gate_config: GateConfig,
    windows: Sequence[WindowEvaluation],
    policy_metrics: Mapping[str, float],
    baseline_metrics: Mapping[str, Mapping[str, float]],
    relay: Callable[[], object] | None = None,
    now: datetime | None = None,
) -> ModelVersion:
    """Store the gate's decision and both sides' metrics on ``version``; promote it if it
    passed (and ``gate_config.auto_promote``), else mark it rejected.

    Returns:
        The version as stored afterwards.
    """
    when = now or datetime.now(UTC)
    if decision.passed and gate_config.auto_promote:
        outcome = ModelStatus.PROMOTED
    elif decision.passed:
        outcome = ModelStatus.REGISTERED
    else:
        outcome = ModelStatus.REJECTED
    document = {
        **decision.to_dict(),
        "decision": outcome.value,
        "auto_promote": gate_config.auto_promote,
        "policy": json_safe(dict(policy_metrics)),
        "baselines": {k: json_safe(dict(v)) for k, v in baseline_metrics.items()},
        "baseline_params": {k: dict(v) for k, v in gate_config.baselines.items()},
        "windows": [w.to_dict() for w in windows],
        "evaluated_at": when.isoformat().replace("+00:00", "Z"),
    }
    if outcome is ModelStatus.PROMOTED:
        promoted, _ = promote_version(
            version.id, models=models, gate=document, relay=relay, now=when
        )
        return promoted
    stored = models.record_gate(version.id, document, status=outcome)
    log.info(
        "model version gated",
        extra={"model_version_id": version.id, "decision": outcome.value,
               "reason": decision.reason},
    )  # fmt: skip
    return stored


def backtest_config_for(env: Mapping[str, Any] | Any) -> BacktestConfig:
    """The backtest config matching a training env's costs, fills, cash and shorting.

    ``env`` is an ``EnvConfig`` (or its full ``model_dump``); the policy and the baselines
    are all run with it, so every side pays the same costs.
    """
    from stocktrade.backtest.config import BacktestConfig
    from stocktrade.domain.costs import CostModel, FillRule
    from stocktrade.domain.risk import RiskLimits

    data = env if isinstance(env, Mapping) else env.model_dump(mode="json")
    costs = CostModel(
        commission_bps=Decimal(str(data["commission_bps"])),
        commission_per_share=Decimal(str(data["commission_per_share"])),
        slippage_bps=Decimal(str(data["slippage_bps"])),
        slippage_range_frac=Decimal(str(data["slippage_range_frac"])),
    )
    return BacktestConfig(
        initial_cash=Decimal(str(data["initial_cash"])),
        costs=costs,
        risk=RiskLimits(allow_short=bool(data["allow_short"])),
        fill_rule=FillRule(data["fill_rule"]),
        whole_shares=bool(data["whole_shares"]),
    )
