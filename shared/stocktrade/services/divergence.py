"""Does the live chain trade exactly like the backtest? The divergence report says.

For one agent and period, :func:`divergence_report` runs the backtest engine
(:func:`stocktrade.backtest.engine.run_backtest`, bar-by-bar path) on the bars the chain
stored, with the agent's strategy, costs, limits, starting cash and allocation
(:func:`stocktrade.services.agents.agent_backtest_config`), from the first bar the agent's
books saw (strategies warm up and cash evolves from there) to the period's end, and compares
with what the chain recorded:

* bars: every bar the backtest steps the chain must have decided, and no other;
* orders (by book and decision bar): target, side, status, reason, fill time, quantity;
* fills (by book and time): side, quantity, price, fee, all exact decimals;
* equity (by book and bar): cash, position and equity marked at the close.

Every difference is listed. On replayed data the list is empty: the chain's paper books run
the backtest's own trading core, broker and kernels. Equity is compared as float64 values
(the backtest's curves) with ``rel_tol`` (default 0: exact); money in orders and fills is
compared as exact decimals. The backtest's last bar expires an order the live chain keeps
pending (it fills at the next bar), so such an order is compared by its decision only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID

from stocktrade.data.arrays import BarArrays
from stocktrade.logging import get_logger
from stocktrade.services.agents import (
    AgentConfig,
    PolicyRuntimes,
    agent_backtest_config,
    build_agent_strategy,
)
from stocktrade.services.paper_book import BookState

__all__ = ["Difference", "DivergenceReport", "DivergenceStore", "divergence_report"]

log = get_logger(__name__)

_STATUS = {"filled": "filled", "rejected": "rejected", "expired": "cancelled"}
_PENDING = {"new", "accepted"}


class DivergenceStore(Protocol):
    """The chain's records (``PostgresChainStore``)."""

    def books(self, agent_id: UUID) -> list[BookState]: ...

    def orders(
        self, agent_id: UUID, start: datetime | None = None, end: datetime | None = None
    ) -> list[dict[str, Any]]: ...

    def fills(
        self, agent_id: UUID, start: datetime | None = None, end: datetime | None = None
    ) -> list[dict[str, Any]]: ...

    def book_equity(
        self, agent_id: UUID, start: datetime | None = None, end: datetime | None = None
    ) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class Difference:
    """One way the chain and the backtest disagree.

    Attributes:
        kind: ``bar``, ``order``, ``fill`` or ``equity``.
        symbol: the book.
        ts: the bar (decision, fill or mark time).
        field: what differs (``price``, ``missing in chain``, ...).
        chain: the chain's value.
        backtest: the backtest's value.
    """

    kind: str
    symbol: str
    ts: datetime | None
    field: str
    chain: Any
    backtest: Any

    def __str__(self) -> str:
        when = self.ts.isoformat() if self.ts is not None else "-"
        return (
            f"{self.kind} {self.symbol} {when} {self.field}: chain={self.chain!s} "
            f"backtest={self.backtest!s}"
        )


@dataclass(frozen=True)
class DivergenceReport:
    """The comparison of one agent's chain records with a backtest.

    Attributes:
        agent_id, agent_name: the agent.
        start, end: the compared period (UTC, inclusive).
        backtest_start: where the backtest began (the agent's first bar).
        symbols: books compared.
        bars, orders, fills: how many of each the backtest produced in the period.
        chain_final_equity, backtest_final_equity: at the period's last bar (sum of books).
        differences: every difference found (empty: the chain equals the backtest).
    """

    agent_id: UUID
    agent_name: str
    start: datetime | None
    end: datetime | None
    backtest_start: datetime | None
    symbols: tuple[str, ...]
    bars: int
    orders: int
    fills: int
    chain_final_equity: Decimal | None
    backtest_final_equity: Decimal | None
    differences: tuple[Difference, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """True when nothing differs."""
        return not self.differences

    def summary(self) -> str:
        """One line."""
        span = f"{self.start.date() if self.start else '-'}..{self.end.date() if self.end else '-'}"
        head = (
            f"{self.agent_name}: {len(self.symbols)} book(s), {self.bars} bars, {self.orders} "
            f"orders, {self.fills} fills ({span})"
        )
        if self.ok:
            return f"{head}: no divergence (final equity {self.chain_final_equity})"
        return f"{head}: {len(self.differences)} difference(s); first: {self.differences[0]}"


def _same(a: float, b: float, rel_tol: float) -> bool:
    if a == b:
        return True
    return rel_tol > 0 and abs(a - b) <= rel_tol * max(abs(a), abs(b), 1.0)


def divergence_report(
    agent: AgentConfig,
    store: DivergenceStore,
    load_bars: Callable[[str, str, datetime | None, datetime | None], BarArrays],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    runtimes: PolicyRuntimes | None = None,
    rel_tol: float = 0.0,
    engine: Callable[..., Any] | None = None,
) -> DivergenceReport:
    """Compare ``agent``'s chain records in ``[start, end]`` with a backtest.

    Args:
        agent: the agent.
        store: the chain's records.
        load_bars: ``(symbol, timeframe, start, end) -> BarArrays`` of stored bars (e.g.
            ``PostgresBarRepository.load``): the bars the chain stored.
        start, end: the period (default: everything the chain decided).
        runtimes: policy runtimes (policy agents).
        rel_tol: relative tolerance of the equity comparison (0: exact).
        engine: the backtest engine (default :func:`~stocktrade.backtest.engine.run_backtest`).
    """
    books = {b.symbol: b for b in store.books(agent.id)}
    firsts = [b.first_bar_ts for b in books.values() if b.first_bar_ts is not None]
    decided = [b.decided_ts for b in books.values() if b.decided_ts is not None]
    if not firsts or not decided:
        return DivergenceReport(
            agent.id, agent.name, start, end, None, agent.symbols, 0, 0, 0, None, None, ()
        )
    bt_start = min(firsts)
    bt_end = max(decided) if end is None else min(end, max(decided))
    if engine is None:
        from stocktrade.backtest.engine import run_backtest

        engine = run_backtest
    data = {s: load_bars(s, agent.timeframe, bt_start, bt_end) for s in agent.symbols}
    data = {s: b for s, b in data.items() if len(b)}
    diffs: list[Difference] = []
    if not data:
        return DivergenceReport(
            agent.id, agent.name, start, end, bt_start, agent.symbols, 0, 0, 0, None, None, ()
        )
    config = agent_backtest_config(agent, start=bt_start, end=bt_end)
    result = engine(data, build_agent_strategy(agent, runtimes), config)
    lo = start if start is not None else bt_start

    def in_period(ts: datetime) -> bool:
        return lo <= ts <= bt_end

    chain_orders = _by_symbol(store.orders(agent.id, lo, bt_end), "bar_ts")
    chain_fills = _by_symbol(store.fills(agent.id, lo, bt_end), "ts")
    chain_marks = _by_symbol(store.book_equity(agent.id, lo, bt_end), "ts")
    n_bars = n_orders = n_fills = 0
    chain_final = Decimal(0)
    bt_final = Decimal(0)
    for symbol in agent.symbols:
        book = result.books.get(symbol)
        if book is None:
            continue
        times = book._times
        last_ts = times[-1] if times else None
        # bars and equity
        marks = chain_marks.get(symbol, {})
        bt_ts = set()
        for t, ts in enumerate(times):
            if not in_period(ts):
                continue
            bt_ts.add(ts)
            n_bars += 1
            mark = marks.get(ts)
            if mark is None:
                diffs.append(Difference("bar", symbol, ts, "missing in chain", None, "decided"))
                continue
            for name, chain_value, bt_value in (
                ("cash", float(mark["cash"]), float(book.cash[t])),
                ("qty", float(mark["qty"]), float(book.qty[t])),
                ("equity", float(mark["equity"]), float(book.equity[t])),
            ):
                if not _same(chain_value, bt_value, rel_tol):
                    diffs.append(Difference("equity", symbol, ts, name, chain_value, bt_value))
        for ts in sorted(set(marks) - bt_ts):
            diffs.append(Difference("bar", symbol, ts, "not in backtest", "decided", None))
        if last_ts is not None and last_ts in marks:
            chain_final += Decimal(marks[last_ts]["equity"])
        bt_final += book.final_equity
        # orders
        orders = chain_orders.get(symbol, {})
        seen = set()
        for o in book.orders:
            if not in_period(o.ts):
                continue
            n_orders += 1
            seen.add(o.ts)
            c = orders.get(o.ts)
            if c is None:
                diffs.append(
                    Difference(
                        "order",
                        symbol,
                        o.ts,
                        "missing in chain",
                        None,
                        f"{o.side.value} target {o.target_frac}",
                    )
                )
                continue
            fields: list[tuple[str, Any, Any]] = [
                ("target", Decimal(c["target_fraction"]), o.target_frac),
                ("reason", c["reason"], o.reason),
            ]
            expired_at_end = o.status.value == "expired" and o.ts == last_ts
            if not expired_at_end:
                qty = Decimal(0) if c["qty"] is None else Decimal(c["qty"])
                fields += [
                    ("status", c["status"], _STATUS[o.status.value]),
                    ("side", c["side"], o.side.value),
                    ("qty", qty, o.qty),
                ]
            elif c["status"] not in _PENDING | {"filled", "rejected"}:
                fields.append(("status", c["status"], "pending at the period's end"))
            for name, chain_value, bt_value in fields:
                if chain_value != bt_value:
                    diffs.append(Difference("order", symbol, o.ts, name, chain_value, bt_value))
        for ts in sorted(set(orders) - seen):
            diffs.append(
                Difference(
                    "order", symbol, ts, "not in backtest", orders[ts]["client_order_id"], None
                )
            )
        # fills
        fills = chain_fills.get(symbol, {})
        seen = set()
        for f in book.fills:
            if not in_period(f.ts):
                continue
            n_fills += 1
            seen.add(f.ts)
            c = fills.get(f.ts)
            if c is None:
                diffs.append(
                    Difference(
                        "fill",
                        symbol,
                        f.ts,
                        "missing in chain",
                        None,
                        f"{f.side.value} {f.qty} @ {f.price}",
                    )
                )
                continue
            fill_fields: tuple[tuple[str, Any, Any], ...] = (
                ("side", c["side"], f.side.value),
                ("qty", Decimal(c["qty"]), f.qty),
                ("price", Decimal(c["price"]), f.price),
                ("fee", Decimal(c["fee"]), f.fee),
            )
            for name, chain_value, bt_value in fill_fields:
                if chain_value != bt_value:
                    diffs.append(Difference("fill", symbol, f.ts, name, chain_value, bt_value))
        for ts in sorted(set(fills) - seen):
            diffs.append(Difference("fill", symbol, ts, "not in backtest", fills[ts]["id"], None))
    report = DivergenceReport(
        agent_id=agent.id,
        agent_name=agent.name,
        start=lo,
        end=bt_end,
        backtest_start=bt_start,
        symbols=tuple(s for s in agent.symbols if s in result.books),
        bars=n_bars,
        orders=n_orders,
        fills=n_fills,
        chain_final_equity=chain_final,
        backtest_final_equity=bt_final,
        differences=tuple(diffs),
    )
    log.info(
        "divergence report",
        extra={
            "agent": agent.name,
            "differences": len(diffs),
            "bars": n_bars,
            "orders": n_orders,
            "fills": n_fills,
        },
    )
    return report


def _by_symbol(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, dict[datetime, Any]]:
    out: dict[str, dict[datetime, Any]] = {}
    for r in rows:
        out.setdefault(r["symbol"], {})[r[key]] = r
    return out
