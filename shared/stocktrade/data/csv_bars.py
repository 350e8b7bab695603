"""The CSV bar format of ``../shared/data`` and its validation.

Format: UTF-8, a header row starting ``timestamp,symbol,open,high,low,close,volume``;
further columns (``adj_close``, ``dividend``, ``split``...) are kept as extras.
``timestamp`` is ISO 8601 with ``Z`` or an explicit offset (naive times are ambiguous
and rejected). Every row is checked: parseable UTC timestamp, non-empty symbol, positive
prices, ``low <= open, close <= high``, volume >= 0, no duplicate (symbol, timestamp).
A file with any bad row is rejected whole, naming file, line and reason.

Prices are parsed as IEEE doubles for validation and stored from their shortest
round-trip representation, which is exact for up to 15 significant digits (every
published price in the data sets qualifies).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from stocktrade.data.arrays import BarArrays
from stocktrade.domain.bars import Timeframe
from stocktrade.errors import ValidationError

REQUIRED = ("timestamp", "symbol", "open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")
MAX_REPORTED = 20


@dataclass
class BarFile:
    """A validated bar file: the frame (one row per bar) plus what was inferred."""

    path: str
    frame: pd.DataFrame  # columns: symbol, ts (datetime64[ns, UTC]), OHLCV floats, extras
    extras: list[str]
    timeframes: dict[str, Timeframe] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.frame)

    def arrays(self) -> dict[str, BarArrays]:
        """One :class:`BarArrays` per symbol, sorted by time."""
        out: dict[str, BarArrays] = {}
        for symbol, group in self.frame.groupby("symbol", sort=True):
            g = group.sort_values("ts")
            out[str(symbol)] = BarArrays(
                str(symbol), self.timeframes[str(symbol)].value,
                g["ts"].dt.tz_localize(None).to_numpy(dtype="datetime64[ns]"),
                *(np.ascontiguousarray(g[c].to_numpy(np.float64)) for c in
                  ("open", "high", "low", "close", "volume")),
            )
        return out


def _fail(path: str, problems: list[tuple[int, str]], total: int | None = None) -> ValidationError:
    total = total if total is not None else len(problems)
    lines = [f"{path}:{line}: {reason}" for line, reason in problems[:MAX_REPORTED]]
    more = f"\n... and {total - MAX_REPORTED} more" if total > MAX_REPORTED else ""
    return ValidationError(
        f"{path}: rejected, nothing imported ({total} bad row{'s' if total != 1 else ''}):\n"
        + "\n".join(lines) + more
    )


def infer_timeframe(ts: np.ndarray) -> Timeframe:
    """Infer the bar duration from sorted UTC timestamps (ns)."""
    if len(ts) < 2:
        midnight = len(ts) == 1 and (ts[0].astype("int64") % 86_400_000_000_000 == 0)
        return Timeframe.D1 if midnight or len(ts) == 0 else Timeframe.M1
    values = ts.astype("int64")
    if bool(np.all(values % 86_400_000_000_000 == 0)):
        return Timeframe.D1
    step_min = float(np.median(np.diff(values))) / 60e9
    for tf, minutes in ((Timeframe.M1, 1), (Timeframe.M5, 5), (Timeframe.M15, 15), (Timeframe.H1, 60)):
        if step_min <= minutes * 1.5:
            return tf
    return Timeframe.D1


def _fast_utc_timestamps(text: np.ndarray) -> pd.Series | None:
    """Parse canonical ``YYYY-MM-DDTHH:MM:SSZ`` stamps at C speed; None if any differs."""
    fixed = text.astype("U20")
    if not bool(np.all(np.char.str_len(fixed) == 20)) or not bool(
        np.all(fixed.view("U1").reshape(len(fixed), 20)[:, 19] == "Z")
    ):
        return None
    try:
        parsed = fixed.astype("U19").astype("datetime64[s]")
    except ValueError:
        return None
    return pd.Series(pd.DatetimeIndex(parsed.astype("datetime64[ns]")).tz_localize("UTC"))


def parse_bar_bytes(
    data: bytes, path: str, *, timeframe: Timeframe | None = None
) -> BarFile:
    """Validate CSV bytes; raise :class:`ValidationError` naming every bad line (first 20)."""
    try:
        header = data.split(b"\n", 1)[0].decode("utf-8").strip().split(",")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{path}:1: not UTF-8: {exc}") from exc
    header = [h.strip().lower() for h in header]
    if tuple(header[: len(REQUIRED)]) != REQUIRED:
        raise ValidationError(
            f"{path}:1: header must start with {','.join(REQUIRED)}; found {','.join(header[:8])}"
        )
    if len(set(header)) != len(header):
        raise ValidationError(f"{path}:1: duplicate column names in header {header}")
    extras = header[len(REQUIRED):]
    numeric = {c: np.float64 for c in (*PRICE_COLUMNS, "volume")}
    try:
        # Fast path: the C parser converts numbers itself. Any unparsable value sends us
        # to the text path below, which finds and names every bad line.
        raw = pd.read_csv(
            io.BytesIO(data), dtype={**{c: str for c in header}, **numeric},
            keep_default_na=False, na_filter=False, encoding="utf-8", engine="c",
            names=header, header=0,
        )
    except ValueError:
        try:
            raw = pd.read_csv(
                io.BytesIO(data), dtype=str, keep_default_na=False, na_filter=False,
                encoding="utf-8", engine="c", names=header, header=0,
            )
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise ValidationError(f"{path}: malformed CSV: {exc}") from exc
    n = len(raw)
    if n == 0:
        raise ValidationError(f"{path}: no data rows after the header")
    lines = np.arange(2, n + 2)
    bad = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}

    def flag(mask: np.ndarray, reason: str) -> None:
        new = mask & ~bad
        for i in np.flatnonzero(new)[:MAX_REPORTED]:
            reasons[int(i)] = reason if "{" not in reason else reason.format(**raw.iloc[i].to_dict())
        bad[:] |= mask

    symbol = raw["symbol"]
    bad_symbols = [s for s in symbol.unique() if not s or len(s) > 32 or s != s.strip()]
    if bad_symbols:
        flag(symbol.isin(bad_symbols).to_numpy(),
             "symbol {symbol!r} must be 1-32 characters without surrounding spaces")

    ts_text = raw["timestamp"]
    ts = _fast_utc_timestamps(ts_text.to_numpy(dtype=object))
    if ts is None:
        ts = pd.to_datetime(ts_text, format="%Y-%m-%dT%H:%M:%SZ", utc=True, errors="coerce")
    retry = ts.isna().to_numpy()
    if retry.any():
        has_zone = ts_text[retry].str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True).to_numpy()
        parsed = pd.to_datetime(ts_text[retry], format="ISO8601", utc=True, errors="coerce")
        parsed[~has_zone] = pd.NaT
        ts = ts.copy()
        ts[retry] = parsed
    flag(ts.isna().to_numpy(), "timestamp {timestamp!r} is not ISO 8601 UTC (e.g. 2015-01-02T00:00:00Z)")

    values = {}
    for col in (*PRICE_COLUMNS, "volume"):
        column = raw[col]
        if column.dtype == np.float64:
            num = column.to_numpy()
        else:
            num = pd.to_numeric(column.str.strip(), errors="coerce").to_numpy(np.float64)
        flag(~np.isfinite(num), f"{col} {{{col}!r}} is not a finite number")
        values[col] = num
    o, h, lo, c, v = (values[k] for k in ("open", "high", "low", "close", "volume"))
    with np.errstate(invalid="ignore"):
        flag(np.minimum.reduce([o, h, lo, c]) <= 0, "prices must be positive")
        flag(v < 0, "volume must be >= 0")
        flag(~((lo <= o) & (o <= h) & (lo <= c) & (c <= h)),
             "OHLC inconsistent: need low <= open,close <= high (o={open} h={high} l={low} c={close})")

    frame = pd.DataFrame({"symbol": symbol, "ts": ts, **values})
    for extra in extras:
        frame[extra] = raw[extra]
    dup = frame.duplicated(["symbol", "ts"], keep=False).to_numpy() & ~bad
    if dup.any():
        first_line: dict[tuple[str, object], int] = {}
        for i in np.flatnonzero(dup):
            key = (frame.at[i, "symbol"], frame.at[i, "ts"])
            if key in first_line:
                reasons[int(i)] = f"duplicate (symbol, timestamp) {key[0]} {pd.Timestamp(key[1]).isoformat()}; first at line {first_line[key]}"
                bad[i] = True
            else:
                first_line[key] = int(lines[i])
    if bad.any():
        idx = np.flatnonzero(bad)
        problems = [(int(lines[i]), reasons.get(int(i), "invalid row")) for i in idx[:MAX_REPORTED]]
        raise _fail(path, problems, total=len(idx))

    result = BarFile(path=path, frame=frame, extras=extras)
    for sym, group in frame.groupby("symbol", sort=False):
        tf = timeframe or infer_timeframe(np.sort(group["ts"].dt.tz_localize(None).to_numpy("datetime64[ns]")))
        result.timeframes[str(sym)] = tf
    return result


def guess_timeframe(data: bytes, lines: int = 4000) -> Timeframe | None:
    """Timeframe of the first symbol, from the file's first lines; None if unparsable."""
    head = data[: 200 * lines]
    cut = head.rfind(b"\n")
    if cut <= 0:
        return None
    try:
        frame = parse_bar_bytes(head[: cut + 1], "<head>").frame
    except ValidationError:
        return None
    first = frame["symbol"].iloc[0]
    ts = frame.loc[frame["symbol"] == first, "ts"].dt.tz_localize(None).to_numpy("datetime64[ns]")
    return infer_timeframe(np.sort(ts))


def read_bar_file(path: str | Path, *, timeframe: Timeframe | None = None) -> BarFile:
    """Read and validate one CSV bar file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ValidationError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    return parse_bar_bytes(data, str(p), timeframe=timeframe)


def read_bars_csv(path: str | Path, *, timeframe: Timeframe | None = None) -> dict[str, BarArrays]:
    """Read, validate and split a bar file into per-symbol arrays (handy in tests)."""
    return read_bar_file(path, timeframe=timeframe).arrays()
