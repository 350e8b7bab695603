"""Use cases for market data: import bar files, summarise what is stored."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stocktrade.domain.bars import Timeframe, UpsertCounts
from stocktrade.errors import ValidationError
from stocktrade.logging import get_logger
from stocktrade.ports import BarRepository

log = get_logger(__name__)


@dataclass(frozen=True)
class ImportReport:
    """What importing one file did."""

    path: str
    rows: int
    symbols: int
    timeframes: dict[str, str]
    counts: UpsertCounts
    seconds: float

    @property
    def bars_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given; a directory stands for its ``*.csv`` bar files (sorted)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.glob("*.csv") if _looks_like_bars(f))
            if not found:
                raise ValidationError(f"{p}: no bar CSV files (header timestamp,symbol,open,...) in folder")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise ValidationError(f"{p}: no such file or folder")
    return out


def _looks_like_bars(path: Path) -> bool:
    with open(path, "rb") as handle:
        first = handle.readline().decode("utf-8", "replace").strip().lower()
    return first.startswith("timestamp,symbol,open,high,low,close,volume")


def import_bar_files(
    repo: BarRepository, paths: Sequence[str | Path], *,
    timeframe: Timeframe | None = None, source: str | None = None,
    on_file: Callable[[Path, int], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> list[ImportReport]:
    """Validate and upsert each file; each file is all-or-nothing.

    Every file is validated in full before any of its rows is written. The first bad file
    raises :class:`ValidationError` (files before it stay imported: each is its own
    transaction, and re-importing them is a no-op).
    """
    reports = []
    for path in expand_paths(paths):
        data = path.read_bytes()
        if on_file:
            on_file(path, len(data))
        started = time.perf_counter()
        parsed, counts = repo.import_csv(
            data, str(path), source=source or path.name, timeframe=timeframe, progress=on_bytes
        )
        report = ImportReport(
            path=str(path), rows=parsed.rows, symbols=len(parsed.timeframes),
            timeframes={s: t.value for s, t in parsed.timeframes.items()},
            counts=counts, seconds=time.perf_counter() - started,
        )
        log.info("imported bar file", extra={
            "path": report.path, "rows": report.rows, "inserted": counts.inserted,
            "updated": counts.updated, "unchanged": counts.unchanged,
            "bars_per_second": round(report.bars_per_second),
        })
        reports.append(report)
    return reports
