"""Replay recorded bars onto the ``market-bars`` topic, as the live ingester would publish them.

Bars come from Postgres (:func:`bars_from_repository`, the bars the platform imported) or a
CSV file of ``../shared/data`` (:func:`bars_from_csv`), as
:class:`stocktrade.domain.bars.Bar` values with exact decimal prices. :class:`BarReplay`
publishes them in time order (all symbols of one timestamp, then the next), each as a
:class:`stocktrade.schemas.events.Bar` event keyed by symbol (the ordering key), through any
:class:`~stocktrade.ports.EventBus`: the in-process bus (the whole chain runs inside the
publish call) or Pub/Sub (the functions consume it).

``speed`` compresses time: a replay waits ``(next bar time - this bar time) / speed`` between
timestamps (``speed=86400`` plays one day of bars per second); ``0`` publishes as fast as
the bus takes them. Event ids derive from source, symbol, timeframe and time, so replaying
the same bars twice publishes the same events and the idempotent chain ignores the copies.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stocktrade.domain.bars import Bar, Timeframe
from stocktrade.errors import ValidationError
from stocktrade.logging import get_logger

if TYPE_CHECKING:
    import psycopg

    from stocktrade.ports import EventBus

__all__ = ["BarReplay", "ReplayStats", "bars_from_csv", "bars_from_repository", "by_time"]

log = get_logger(__name__)

REPLAY_SOURCE = "replay"


def by_time(bars: Iterable[Bar]) -> list[Bar]:
    """Bars in publication order: by time, then symbol."""
    return sorted(bars, key=lambda b: (b.ts, b.symbol))


def bars_from_repository(
    conn: psycopg.Connection,
    symbols: Sequence[str],
    timeframe: str = "1d",
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    source: str = REPLAY_SOURCE,
) -> list[Bar]:
    """Stored bars of ``symbols`` with ``start <= ts <= end``, exact (NUMERIC) prices.

    Raises:
        ValidationError: a symbol has no stored bars in the range.
    """
    rows = conn.execute(
        "SELECT symbol, ts, open, high, low, close, volume FROM bars "
        "WHERE symbol = ANY(%s) AND timeframe = %s "
        "AND (%s::timestamptz IS NULL OR ts >= %s) AND (%s::timestamptz IS NULL OR ts <= %s) "
        "ORDER BY ts, symbol",
        (list(symbols), timeframe, start, start, end, end),
    ).fetchall()
    tf = Timeframe.parse(timeframe)
    out = [Bar(r[0], tf, r[1].astimezone(UTC), r[2], r[3], r[4], r[5], r[6], source) for r in rows]
    missing = sorted(set(symbols) - {b.symbol for b in out})
    if missing:
        raise ValidationError(
            f"no stored {timeframe} bars for {missing} between {start} and {end}; import them "
            "with `stocktrade data import`"
        )
    return out


def bars_from_csv(
    path: str | Path,
    symbols: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    timeframe: str = "1d",
    source: str = REPLAY_SOURCE,
) -> list[Bar]:
    """Bars of a ``../shared/data`` style CSV (``timestamp,symbol,open,high,low,close,volume``),
    prices as the exact decimals written in the file, in publication order."""
    import csv

    tf = Timeframe.parse(timeframe)
    wanted = None if symbols is None else set(symbols)
    out = []
    with Path(path).open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if wanted is not None and row["symbol"] not in wanted:
                continue
            ts = datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00")).astimezone(UTC)
            if (start is not None and ts < start) or (end is not None and ts > end):
                continue
            o, h, lo, c, v = (Decimal(row[k]) for k in ("open", "high", "low", "close", "volume"))
            out.append(Bar(row["symbol"], tf, ts, o, h, lo, c, v, source))
    return by_time(out)


@dataclass(frozen=True, slots=True)
class ReplayStats:
    """What a replay published."""

    bars: int
    timestamps: int
    seconds: float

    @property
    def bars_per_second(self) -> float:
        return self.bars / self.seconds if self.seconds > 0 else float("inf")


class BarReplay:
    """Publishes recorded bars to ``market-bars`` at a chosen speed.

    Args:
        bus: where to publish (in-process bus, Pub/Sub).
        speed: time compression (``0``: no waiting).
        batch: publish all symbols of one timestamp in one ``publish_many`` call (else one
            ``publish`` per bar).
        sleep: the sleep function (tests pass a fake).
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        speed: float = 0.0,
        batch: bool = False,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        if not speed >= 0:
            raise ValidationError(f"speed must be >= 0 (0 = as fast as possible), found {speed}")
        self.bus = bus
        self.speed = float(speed)
        self.batch = batch
        self._sleep = sleep

    def events(self, bars: Iterable[Bar]) -> Iterator[list[Any]]:
        """The bar events per timestamp, in publication order."""
        from stocktrade.schemas.events import Bar as BarEvent

        for _ts, group in groupby(by_time(bars), key=lambda b: b.ts):
            yield [BarEvent.from_domain(b) for b in group]

    def run(
        self,
        bars: Iterable[Bar],
        *,
        on_timestamp: Callable[[datetime, int], Any] | None = None,
    ) -> ReplayStats:
        """Publish ``bars``; returns what was published.

        Args:
            bars: the bars (any order; published by time then symbol).
            on_timestamp: called after each timestamp's bars with ``(ts, bars so far)``.

        Raises:
            Exception: whatever the bus raises (an in-process chain's failure surfaces here).
        """
        from stocktrade.schemas.events import Topic

        started = time.perf_counter()
        topic = Topic.MARKET_BARS.value
        n = stamps = 0
        previous: datetime | None = None
        for group in self.events(bars):
            ts = group[0].ts
            if self.speed > 0 and previous is not None:
                self._sleep((ts - previous).total_seconds() / self.speed)
            if self.batch:
                results = self.bus.publish_many([(topic, e, None) for e in group])
                for r in results:
                    if isinstance(r, BaseException):
                        raise r
            else:
                for event in group:
                    self.bus.publish(topic, event)
            n += len(group)
            stamps += 1
            previous = ts
            if on_timestamp is not None:
                on_timestamp(ts, n)
        seconds = time.perf_counter() - started
        log.info("replay done", extra={"bars": n, "timestamps": stamps, "seconds": seconds})
        return ReplayStats(n, stamps, seconds)
