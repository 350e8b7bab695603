"""The decision log (FMEL): what an agent saw, decided and did on every bar.

Every decision of the live chain is stored with the market state (the bar and the features),
the strategy state (position, cash, equity, target in force), the policy output
(probabilities and chosen action), the model version, every risk check with its code and
reason, the sizing, the resulting order and the latencies. :func:`decision_log` reads an
agent's entries for a time range (with the order's outcome: status, fill price, fee) and
:func:`format_entry` renders one as a line for humans.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID

from stocktrade.errors import ValidationError

__all__ = ["DecisionEntry", "DecisionLogStore", "decision_log", "format_entry"]


class DecisionLogStore(Protocol):
    """Where decisions are stored (``PostgresChainStore``)."""

    def decisions(
        self,
        agent_id: UUID,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        symbol: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class DecisionEntry:
    """One decision of one agent on one bar.

    Attributes:
        id: the decision id (deterministic: agent, symbol, bar time).
        agent_id, symbol, bar_ts, bar_number: which book and bar.
        market_state: ``{"bar": {...}, "features": {name: value}}``.
        strategy_state: position, cash, equity, target in force, halted, ...
        policy_output: action, target, probabilities, confidence.
        model_version_id: the policy version (policies).
        risk_checks: ``[{"check", "passed", "code", "reason"}]``.
        sizing: desired and approved target, order placed, estimated quantity, costs.
        order_id: the resulting ``client_order_id`` (None: no order).
        latencies: inference and decision times (µs), backend.
        order: the order's outcome (status, side, qty, fill time, fill price, fee, fill-time
            risk codes), when there is an order.
    """

    id: UUID
    agent_id: UUID
    symbol: str
    bar_ts: datetime
    bar_number: int | None
    market_state: Mapping[str, Any]
    strategy_state: Mapping[str, Any]
    policy_output: Mapping[str, Any]
    model_version_id: UUID | None
    risk_checks: tuple[Mapping[str, Any], ...]
    sizing: Mapping[str, Any]
    order_id: str | None
    latencies: Mapping[str, Any]
    order: Mapping[str, Any] | None

    @property
    def failed_checks(self) -> list[Mapping[str, Any]]:
        """The risk checks that blocked or changed the decision."""
        return [c for c in self.risk_checks if not c.get("passed")]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (API, CLI ``--json``)."""
        import json

        data = {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]
        return json.loads(json.dumps(data, default=str))  # type: ignore[no-any-return]


def decision_log(
    store: DecisionLogStore,
    agent_id: UUID,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    symbol: str | None = None,
    limit: int | None = None,
) -> list[DecisionEntry]:
    """An agent's decisions with ``start <= bar time <= end``, oldest first.

    Raises:
        ValidationError: ``start`` is after ``end`` or ``limit`` is not positive.
    """
    if start is not None and end is not None and start > end:
        raise ValidationError(
            f"start must be on or before end, found {start.isoformat()} > {end.isoformat()}"
        )
    if limit is not None and limit <= 0:
        raise ValidationError(f"limit must be > 0, found {limit}")
    out = []
    for r in store.decisions(agent_id, start, end, symbol=symbol, limit=limit):
        order = None
        if r.get("order_id"):
            order = {
                "status": r.get("order_status"),
                "side": r.get("order_side"),
                "qty": r.get("order_qty"),
                "fill_ts": r.get("order_fill_ts"),
                "fill_price": r.get("fill_price"),
                "fee": r.get("fill_fee"),
                "risk_codes": list(r.get("order_risk_codes") or []),
            }
        out.append(
            DecisionEntry(
                id=UUID(str(r["id"])),
                agent_id=UUID(str(r["agent_id"])),
                symbol=r["symbol"],
                bar_ts=r["bar_ts"],
                bar_number=r.get("bar_number"),
                market_state=r["market_state"],
                strategy_state=r["strategy_state"],
                policy_output=r["policy_output"],
                model_version_id=r.get("model_version_id"),
                risk_checks=tuple(r["risk_checks"]),
                sizing=r["sizing"],
                order_id=r.get("order_id"),
                latencies=r["latencies"],
                order=order,
            )
        )
    return out


def format_entry(entry: DecisionEntry) -> str:
    """One line: bar, action, target, blocked checks, order outcome."""
    bar = entry.market_state.get("bar", {})
    out = entry.policy_output
    sizing = entry.sizing
    parts = [
        f"{entry.bar_ts.date().isoformat()} {entry.symbol}",
        f"close {bar.get('close')}",
        f"{out.get('action')}",
        f"target {sizing.get('desired_target')} -> {sizing.get('approved_target')}",
        f"equity {Decimal(str(entry.strategy_state.get('equity', '0'))):.2f}",
    ]
    blocked = [c["code"] for c in entry.failed_checks]
    if blocked:
        parts.append("risk " + ",".join(blocked))
    if entry.order is not None:
        o = entry.order
        fill = f" @ {o['fill_price']}" if o.get("fill_price") is not None else ""
        parts.append(f"order {o.get('status')} {o.get('side')} {o.get('qty') or ''}{fill}".strip())
    return " | ".join(parts)
