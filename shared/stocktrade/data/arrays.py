"""Column arrays of bars: what the backtest engine, the RL env and features consume."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True, eq=False)
class BarArrays:
    """One symbol's bars as float64 columns, sorted by time, ``ts`` UTC ``datetime64[ns]``.

    Prices are float64 views of the stored ``NUMERIC`` values (exact to ~15 significant
    digits, which covers every published price); money stays ``Decimal`` at the boundary.
    """

    symbol: str
    timeframe: str
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.ts)
        for name in ("open", "high", "low", "close", "volume"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"column {name} has {len(getattr(self, name))} rows, ts has {n}")
        if n > 1 and not bool(np.all(self.ts[1:] > self.ts[:-1])):
            raise ValueError(f"{self.symbol}: timestamps must be strictly increasing")

    def __len__(self) -> int:
        return len(self.ts)

    def slice(self, start: int, stop: int) -> BarArrays:
        """Rows ``start:stop`` (views, no copy)."""
        return BarArrays(self.symbol, self.timeframe, self.ts[start:stop], self.open[start:stop],
                         self.high[start:stop], self.low[start:stop], self.close[start:stop],
                         self.volume[start:stop])

    def between(self, start: np.datetime64 | str | None, end: np.datetime64 | str | None) -> BarArrays:
        """Rows with ``start <= ts <= end`` (either bound may be None)."""
        lo = 0 if start is None else int(np.searchsorted(self.ts, np.asarray(start, "datetime64[ns]"), "left"))
        hi = len(self) if end is None else int(np.searchsorted(self.ts, np.asarray(end, "datetime64[ns]"), "right"))
        return self.slice(lo, hi)

    def to_frame(self) -> pd.DataFrame:
        """A DataFrame indexed by UTC time with columns Open, High, Low, Close, Volume."""
        import pandas as pd

        index = pd.DatetimeIndex(self.ts, name="ts").tz_localize("UTC")
        return pd.DataFrame(
            {"Open": self.open, "High": self.high, "Low": self.low, "Close": self.close,
             "Volume": self.volume},
            index=index,
        )

    @classmethod
    def from_frame(cls, symbol: str, timeframe: str, frame: pd.DataFrame) -> BarArrays:
        """Build from a DataFrame with a DatetimeIndex and OHLCV columns (any case)."""
        cols = {c.lower(): c for c in frame.columns}
        index = frame.index
        if getattr(index, "tz", None) is not None:
            index = index.tz_convert("UTC").tz_localize(None)
        return cls(
            symbol, timeframe, np.asarray(index, dtype="datetime64[ns]"),
            *(np.ascontiguousarray(frame[cols[k]].to_numpy(dtype=np.float64))
              for k in ("open", "high", "low", "close", "volume")),
        )
