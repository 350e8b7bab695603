"""Paper-trading agents: create them from a baseline or a model version, build their strategy.

An agent is a strategy (a baseline with parameters, or an ONNX policy version), the symbols
it trades, its costs and risk limits and its starting cash. Each agent has its own paper
book per symbol (the ``chain_books`` rows created with it): the starting cash is split over
the symbols exactly like a backtest with ``cash_allocation="split"``
(:func:`stocktrade.backtest.engine.book_cash`), and books never share cash, so an agent's
chain results compare one-to-one with a backtest of the same strategy and config.

Storage goes through :class:`AgentStore` (``PostgresAgentStore``); policies are loaded
through :class:`PolicyRuntimes` (ONNX bytes checked against the version's sha256, one
runtime per model version and process).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID

from stocktrade.backtest.config import BacktestConfig
from stocktrade.domain.bars import Timeframe
from stocktrade.domain.costs import CostModel, FillRule
from stocktrade.domain.risk import RiskLimits
from stocktrade.errors import NotFoundError, ValidationError
from stocktrade.logging import get_logger
from stocktrade.services.paper_book import BookConfig
from stocktrade.services.policy_bytes import read_verified_policy
from stocktrade.strategies.base import Strategy

__all__ = [
    "AgentConfig",
    "AgentSpec",
    "AgentStore",
    "ModelRef",
    "PolicyRuntimes",
    "agent_backtest_config",
    "build_agent_strategy",
    "create_agent",
    "policy_agent_spec",
    "split_cash",
]

log = get_logger(__name__)

#: Inference backend names written into signals and decisions.
BACKEND_RULES = "python-rules"
BACKEND_ONNX = "onnx-cpu"


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A stored policy version (a ``model_versions`` row)."""

    id: UUID
    agent_name: str
    version: int
    uri_onnx: str
    sha256: str
    manifest: Mapping[str, Any]
    status: str = "registered"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """An agent as the chain runs it (an ``agents`` row, parsed and validated).

    Attributes:
        id, owner, name: identity.
        kind: ``baseline`` or ``policy``.
        strategy: baseline name (``sma_crossover`` ...) or ``onnx_policy``.
        params: strategy parameters (baselines: constructor keywords; policies:
            ``model_name``, ``follow_promotions``, optional ``size``).
        symbols: symbols traded, one book each, in allocation order.
        timeframe: bar timeframe traded.
        status: ``active`` agents trade; others are skipped.
        risk, costs: limits and costs of every book.
        initial_cash: total starting cash (split over the books).
        model: the policy version (policies only).
    """

    id: UUID
    owner: str
    name: str
    kind: str
    strategy: str
    params: Mapping[str, Any]
    symbols: tuple[str, ...]
    timeframe: str
    status: str
    risk: RiskLimits
    costs: CostModel
    initial_cash: Decimal
    model: ModelRef | None = None

    @property
    def model_version_id(self) -> UUID | None:
        return None if self.model is None else self.model.id

    def book_config(self, *, jit: bool = True) -> BookConfig:
        """The paper-book settings of this agent."""
        return BookConfig(costs=self.costs, limits=self.risk, whole_shares=True, jit=jit)

    @property
    def cache_key(self) -> tuple[Any, ...]:
        """What a cached strategy instance depends on."""
        return (self.kind, self.strategy, repr(sorted(self.params.items())), self.model_version_id)


@dataclass(frozen=True)
class AgentSpec:
    """What a user asks for when creating an agent.

    Attributes:
        name: unique per owner.
        strategy: baseline name (aliases accepted) or ``onnx_policy`` for a policy.
        symbols: symbols to trade.
        params: strategy parameters.
        timeframe: ``1d`` (default), ``1h``, ...
        initial_cash: total starting cash.
        risk: :class:`RiskLimits` fields.
        costs: :class:`CostModel` fields.
        owner: the owning user.
        model_version_id: the policy version (policies only).
    """

    name: str
    strategy: str
    symbols: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    timeframe: str = "1d"
    initial_cash: Decimal = Decimal("100000")
    risk: Mapping[str, Any] = field(default_factory=dict)
    costs: Mapping[str, Any] = field(default_factory=dict)
    owner: str = "local"
    model_version_id: UUID | None = None

    @property
    def kind(self) -> str:
        return "policy" if self.model_version_id is not None else "baseline"


class AgentStore(Protocol):
    """Where agents live (``PostgresAgentStore``)."""

    def insert(
        self, spec: AgentSpec, strategy: str, books: Sequence[tuple[str, Decimal]]
    ) -> AgentConfig:
        """Create the agent, its books, positions, opening deposit and leaderboard row in one
        transaction. Raises :class:`~stocktrade.errors.ConflictError` if the name is taken."""
        ...

    def get(self, agent: str | UUID, *, owner: str | None = None) -> AgentConfig: ...

    def list(self, *, owner: str | None = None) -> list[AgentConfig]: ...

    def model_version(self, model_version_id: UUID) -> ModelRef: ...

    def promoted_version(self, agent_name: str) -> ModelRef | None: ...


def split_cash(initial_cash: Decimal, symbols: Sequence[str]) -> list[tuple[str, Decimal]]:
    """Each book's starting cash: the backtest's ``split`` allocation."""
    from stocktrade.backtest.engine import book_cash

    config = BacktestConfig(initial_cash=initial_cash, symbols=tuple(symbols))
    return list(zip(symbols, book_cash(config, len(symbols)), strict=True))


def _check_spec(spec: AgentSpec) -> tuple[str, RiskLimits, CostModel]:
    problems: list[str] = []
    if not spec.name or not spec.name.strip() or len(spec.name) > 200:
        problems.append(f"name must be 1-200 characters, found {spec.name!r}")
    symbols = tuple(spec.symbols)
    if not symbols:
        problems.append("symbols must not be empty")
    if len(set(symbols)) != len(symbols):
        problems.append(f"symbols must not repeat, found {list(symbols)}")
    try:
        Timeframe.parse(spec.timeframe)
    except Exception as exc:  # the parser's own message says what is accepted
        problems.append(str(exc))
    cash = Decimal(str(spec.initial_cash))
    if not cash.is_finite() or cash <= 0:
        problems.append(f"initial_cash must be > 0, found {spec.initial_cash}")
    risk = costs = None
    try:
        risk = RiskLimits.from_dict(dict(spec.risk))
    except ValidationError as exc:
        problems.append(str(exc))
    try:
        costs = CostModel.from_dict(dict(spec.costs))
    except ValidationError as exc:
        problems.append(str(exc))
    strategy = "onnx_policy"
    if spec.model_version_id is None:
        from stocktrade.services.backtest_runs import build_strategy, canonical_strategy

        try:
            build_strategy(spec.strategy, spec.params)
            strategy = canonical_strategy(spec.strategy)
        except ValidationError as exc:
            problems.append(str(exc))
    if problems:
        raise ValidationError(f"invalid agent {spec.name!r}: " + "; ".join(problems))
    assert risk is not None and costs is not None
    return strategy, risk, costs


def create_agent(store: AgentStore, spec: AgentSpec) -> AgentConfig:
    """Validate ``spec`` and create the agent with one paper book per symbol.

    Raises:
        ValidationError: a bad name, symbol list, strategy, parameter, cost or limit.
        NotFoundError: the model version does not exist.
        ConflictError: the owner already has an agent of that name.
    """
    strategy, _risk, _costs = _check_spec(spec)
    if spec.model_version_id is not None:
        store.model_version(spec.model_version_id)  # NotFoundError when missing
    agent = store.insert(spec, strategy, split_cash(Decimal(str(spec.initial_cash)), spec.symbols))
    log.info(
        "agent created",
        extra={
            "agent_id": str(agent.id),
            "agent": agent.name,
            "strategy": agent.strategy,
            "symbols": list(agent.symbols),
        },
    )
    return agent


def policy_agent_spec(
    model: ModelRef,
    *,
    name: str,
    symbols: Sequence[str],
    initial_cash: Decimal = Decimal("100000"),
    risk: Mapping[str, Any] | None = None,
    costs: Mapping[str, Any] | None = None,
    owner: str = "local",
    follow_promotions: bool = True,
    timeframe: str | None = None,
) -> AgentSpec:
    """An agent spec trading ``model``; costs, shorting and timeframe default to the ones the
    policy was trained with (its manifest's env config)."""
    env = dict(model.manifest.get("env_config") or {})
    default_costs = {
        k: str(env[k])
        for k in ("commission_bps", "commission_per_share", "slippage_bps", "slippage_range_frac")
        if k in env
    }
    default_risk: dict[str, Any] = {"allow_short": bool(env.get("allow_short", False))}
    return AgentSpec(
        name=name,
        strategy="onnx_policy",
        symbols=tuple(symbols),
        params={"model_name": model.agent_name, "follow_promotions": follow_promotions},
        timeframe=timeframe or str((model.manifest.get("data") or {}).get("timeframe") or "1d"),
        initial_cash=initial_cash,
        risk={**default_risk, **(risk or {})},
        costs={**default_costs, **(costs or {})},
        owner=owner,
        model_version_id=model.id,
    )


class PolicyRuntimes:
    """ONNX policy runtimes, loaded once per model version and process.

    Args:
        read: ``uri -> bytes`` of the ONNX file (``file://``, ``gs://`` or a store key).
        make_runtime: ``bytes -> runtime`` (default:
            :class:`~stocktrade.adapters.inference.onnx_runtime.OnnxPolicyRuntime`).
    """

    def __init__(
        self,
        read: Callable[[str], bytes],
        make_runtime: Callable[[bytes], Any] | None = None,
    ) -> None:
        self._read = read
        self._make = make_runtime
        self._cache: dict[UUID, Any] = {}
        self._lock = threading.Lock()

    def get(self, model: ModelRef) -> Any:
        """The runtime of ``model`` (loaded and hash-checked on first use).

        Raises:
            PermanentError: the ONNX file's sha256 is not the recorded one.
        """
        runtime = self._cache.get(model.id)
        if runtime is not None:
            return runtime
        with self._lock:
            runtime = self._cache.get(model.id)
            if runtime is None:
                data = read_verified_policy(
                    self._read, model.uri_onnx, model.sha256, model_version_id=model.id
                )
                make = self._make
                if make is None:
                    from stocktrade.adapters.inference.onnx_runtime import OnnxPolicyRuntime

                    make = OnnxPolicyRuntime
                runtime = make(data)
                self._cache[model.id] = runtime
        return runtime

    def evict(self, keep: UUID | None = None) -> int:
        """Drop every cached runtime except ``keep``; returns how many were dropped."""
        with self._lock:
            drop = [k for k in self._cache if k != keep]
            for k in drop:
                del self._cache[k]
        return len(drop)

    def __contains__(self, model_version_id: object) -> bool:
        return model_version_id in self._cache


def build_agent_strategy(agent: AgentConfig, runtimes: PolicyRuntimes | None = None) -> Strategy:
    """A fresh strategy instance for ``agent`` (a baseline, or its ONNX policy version).

    Raises:
        ValidationError: bad parameters, or a policy manifest without feature and
            observation specs.
        NotFoundError: a policy agent without a model version.
    """
    if agent.kind != "policy":
        from stocktrade.services.backtest_runs import build_strategy

        return build_strategy(agent.strategy, agent.params)
    if agent.model is None:
        raise NotFoundError(f"policy agent {agent.name!r} has no model version")
    if runtimes is None:
        raise ValidationError(f"policy agent {agent.name!r} needs a policy runtime cache")
    from stocktrade.quant.features import FeatureSpec
    from stocktrade.quant.observation import ObservationSpec
    from stocktrade.strategies.onnx_policy import OnnxPolicyStrategy

    manifest = agent.model.manifest
    if "feature_spec" not in manifest or "observation_spec" not in manifest:
        raise ValidationError(
            f"model version {agent.model.id} manifest must hold feature_spec and "
            f"observation_spec, found keys {sorted(manifest)}"
        )
    env = dict(manifest.get("env_config") or {})
    size = float(agent.params.get("size", env.get("position_size", 1.0)))
    return OnnxPolicyStrategy(
        runtimes.get(agent.model),
        feature_spec=FeatureSpec.from_dict(manifest["feature_spec"]),
        obs_spec=ObservationSpec.from_dict(manifest["observation_spec"]),
        allow_short=agent.risk.allow_short,
        size=size,
        name=f"onnx_policy:{agent.model.agent_name}:v{agent.model.version}",
    )


def agent_backtest_config(
    agent: AgentConfig, *, start: datetime | None = None, end: datetime | None = None
) -> BacktestConfig:
    """The backtest configuration that reproduces ``agent``'s chain books."""
    return BacktestConfig(
        initial_cash=agent.initial_cash,
        cash_allocation="split",
        symbols=agent.symbols,
        start=start,
        end=end,
        costs=agent.costs,
        risk=agent.risk,
        fill_rule=FillRule.NEXT_OPEN,
        whole_shares=True,
        close_at_end=False,
        mode="step",
    )
