"""The backtest report: one self-contained HTML file, readable without a server.

Charts are hand-built inline SVG (no JavaScript, no fonts, images or styles fetched from
anywhere, no plotting library to import): the portfolio equity curve with a marker at every
fill (green up-triangles buy, red down-triangles sell; hover for details), the drawdown
below it, and each symbol's close with its fills. Then the metrics table, the trades and the
merged config snapshot. Every piece of text is HTML-escaped.

Long curves are thinned for drawing only (each pixel column keeps its first, lowest, highest
and last point, so peaks and drawdowns stay visible); the CSV artifacts keep every bar.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from stocktrade.backtest.result import BacktestResult

__all__ = [
    "METRIC_ROWS",
    "Marker",
    "ReportData",
    "drawdown",
    "format_metric",
    "render_backtest_report",
    "render_report",
    "report_data_from_result",
    "svg_chart",
    "thin",
]

_WIDTH = 960
_MAX_POINTS = 1600  # drawn points per series (about two per pixel column)
_MAX_MARKERS = 1500  # fill markers drawn per chart
_MAX_SYMBOL_CHARTS = 8
_MAX_TRADE_ROWS = 200
_BUY = "#15803d"
_SELL = "#b91c1c"
_LINE = "#1d4ed8"

#: Metric display order and format: (key, label, kind); kind: pct, ratio, money, int, num.
METRIC_ROWS: tuple[tuple[str, str, str], ...] = (
    ("total_return", "Total return", "pct"),
    ("cagr", "CAGR", "pct"),
    ("annual_volatility", "Annual volatility", "pct"),
    ("sharpe", "Sharpe ratio", "ratio"),
    ("sortino", "Sortino ratio", "ratio"),
    ("calmar", "Calmar ratio", "ratio"),
    ("max_drawdown", "Max drawdown", "pct"),
    ("max_drawdown_duration", "Longest drawdown (bars)", "int"),
    ("n_trades", "Closed trades", "int"),
    ("win_rate", "Win rate", "pct"),
    ("profit_factor", "Profit factor", "ratio"),
    ("avg_trade", "Average trade P&L", "money"),
    ("turnover_annual", "Turnover (per year)", "ratio"),
    ("exposure", "Time in market", "pct"),
    ("avg_exposure", "Average exposure", "pct"),
    ("initial_cash", "Initial cash", "money"),
    ("final_equity", "Final equity", "money"),
    ("total_fees", "Fees paid", "money"),
    ("n_orders", "Orders", "int"),
    ("n_fills", "Fills", "int"),
    ("n_periods", "Bars", "int"),
)


@dataclass(frozen=True)
class Marker:
    """A fill drawn on a chart.

    Attributes:
        symbol: instrument.
        ts: fill time (``datetime64[ns]``, UTC).
        side: ``"buy"`` or ``"sell"``.
        price: execution price.
        qty: units traded (positive).
    """

    symbol: str
    ts: np.datetime64
    side: str
    price: float
    qty: float


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows, as plain data (so it renders without an engine result).

    Attributes:
        title: page title.
        ts: portfolio time grid (``datetime64[ns]``).
        equity: portfolio equity per bar.
        metrics: metric name -> value (floats, Decimals or None).
        config: the merged config snapshot (JSON-safe), shown as YAML.
        markers: fills.
        prices: symbol -> (``ts``, ``close``) for the per-symbol charts.
        trades: closed trades as dicts (symbol, side, qty, entry_ts, entry_price, exit_ts,
            exit_price, pnl, return_pct).
        subtitle: a line under the title (strategy, symbols, range).
    """

    title: str
    ts: np.ndarray
    equity: np.ndarray
    metrics: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    markers: Sequence[Marker] = ()
    prices: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    trades: Sequence[Mapping[str, Any]] = ()
    subtitle: str = ""


# -- data from a result -----------------------------------------------------------------------


def report_data_from_result(
    result: BacktestResult,
    *,
    title: str,
    config: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    subtitle: str = "",
) -> ReportData:
    """Collect what the report shows from a :class:`~stocktrade.backtest.result.BacktestResult`."""
    markers = []
    for book in result.books.values():
        r = book.records
        done = (r.fill_bar >= 0) & (r.qty != 0)
        for k in np.flatnonzero(done):
            q = float(r.qty[k])
            markers.append(
                Marker(
                    book.symbol,
                    book.ts[int(r.fill_bar[k])],
                    "buy" if q > 0 else "sell",
                    float(r.price[k]),
                    abs(q),
                )
            )
    trades = [
        {
            "symbol": t.symbol,
            "side": "long" if t.is_long else "short",
            "qty": t.qty,
            "entry_ts": t.entry_ts,
            "entry_price": t.entry_price,
            "exit_ts": t.exit_ts,
            "exit_price": t.exit_price,
            "pnl": t.pnl,
            "return_pct": t.return_pct,
        }
        for t in result.trades
    ]
    return ReportData(
        title=title,
        ts=np.asarray(result.ts),
        equity=np.asarray(result.equity, dtype=np.float64),
        metrics=dict(metrics if metrics is not None else result.metrics),
        config=config,
        markers=markers,
        prices={s: (b.ts, b.close) for s, b in result.books.items()},
        trades=trades,
        subtitle=subtitle,
    )


def render_backtest_report(
    result: BacktestResult,
    *,
    title: str,
    config: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    subtitle: str = "",
) -> str:
    """The HTML report of a backtest result (see :func:`render_report`)."""
    return render_report(
        report_data_from_result(
            result, title=title, config=config, metrics=metrics, subtitle=subtitle
        )
    )


# -- formatting -------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _finite(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def format_metric(value: Any, kind: str) -> str:
    """A metric as shown in the table (``n/a`` for missing, NaN or infinite values)."""
    if value is None:
        return "n/a"
    f = _finite(value)
    if f is None:
        try:
            inf = float(value)
        except (TypeError, ValueError):
            return str(value)
        return "∞" if inf == math.inf else "-∞" if inf == -math.inf else "n/a"
    if kind == "pct":
        return f"{f * 100:,.2f} %"
    if kind == "ratio":
        return f"{f:,.3f}"
    if kind == "money":
        return f"{f:,.2f}"
    if kind == "int":
        return f"{f:,.0f}"
    return f"{f:,.6g}"


def _to_yaml(data: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(
        _plain(data), sort_keys=False, default_flow_style=False, allow_unicode=True
    )


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def _ns(ts: Any) -> int:
    """A time (``datetime64`` or aware ``datetime``) as int64 nanoseconds since the epoch."""
    if isinstance(ts, datetime):
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return int(np.asarray(ts).astype("datetime64[ns]").astype(np.int64))


def _date(ns: int) -> str:
    return str(np.datetime64(int(ns), "ns"))[:10]


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d")
    if isinstance(value, np.datetime64):
        return str(value)[:10]
    return str(value)


# -- SVG --------------------------------------------------------------------------------------


def thin(
    x: np.ndarray, y: np.ndarray, max_points: int = _MAX_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """Points to draw of a long curve: per bucket its first, lowest, highest and last point."""
    n = len(x)
    if n <= max_points:
        return x, y
    buckets = max(1, max_points // 4)
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    keep: list[int] = []
    finite = np.where(np.isfinite(y), y, np.nan)
    for a, b in itertools.pairwise(edges):
        if b <= a:
            continue
        seg = finite[a:b]
        picks = {int(a), int(b - 1)}
        if not np.all(np.isnan(seg)):
            picks.add(int(a + np.nanargmin(seg)))
            picks.add(int(a + np.nanargmax(seg)))
        keep.extend(sorted(picks))
    idx = np.asarray(keep, dtype=np.int64)
    return x[idx], y[idx]


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    ticks: list[float] = []
    v = first
    while v <= hi + step * 1e-9 and len(ticks) < 20:
        ticks.append(0.0 if abs(v) < step * 1e-9 else v)
        v += step
    return ticks


def _fmt_axis(v: float, kind: str, step: float) -> str:
    """An axis label with as many decimals as the tick step needs."""
    scale, suffix = 1.0, ""
    if kind == "pct":
        scale, suffix = 100.0, "%"
    elif max(abs(v), step) >= 1e6:
        scale, suffix = 1e-6, "M"
    elif max(abs(v), step) >= 1e4:
        scale, suffix = 1e-3, "k"
    shown_step = step * scale
    decimals = max(0, min(6, -math.floor(math.log10(shown_step) + 1e-9))) if shown_step > 0 else 0
    if shown_step > 0 and round(shown_step, decimals) != round(shown_step, decimals + 1):
        decimals += 1  # steps like 2.5
    return f"{v * scale:,.{decimals}f}{suffix}"


def svg_chart(
    x_ns: np.ndarray,
    y: np.ndarray,
    *,
    title: str,
    color: str = _LINE,
    height: int = 260,
    y_kind: str = "num",
    area: bool = False,
    markers: Iterable[tuple[int, float, str, str]] = (),
    marker_count: int = 0,
) -> str:
    """One line chart as an inline ``<svg>``.

    Args:
        x_ns: times as int64 nanoseconds.
        y: values (NaN breaks are skipped).
        title: caption drawn in the chart.
        color: line colour.
        height: pixel height.
        y_kind: axis labels: ``"pct"`` (fractions shown as percent) or ``"num"``.
        area: fill between the line and zero (drawdowns).
        markers: ``(x_ns, y, side, tooltip)`` per fill; side ``"buy"``/``"sell"``.
        marker_count: markers that exist in total (a note says when not all are drawn).
    """
    width = _WIDTH
    left, right, top, bottom = 70, 16, 28, 30
    pw, ph = width - left - right, height - top - bottom
    x = np.asarray(x_ns, dtype=np.int64)
    yv = np.asarray(y, dtype=np.float64)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{_esc(title)}">',
        f'<text x="{left}" y="18" class="ct">{_esc(title)}</text>',
    ]
    ok = np.isfinite(yv)
    if len(x) == 0 or not ok.any():
        parts.append(f'<text x="{left + 10}" y="{top + ph / 2}" class="al">no data</text></svg>')
        return "".join(parts)
    marks = list(markers)
    x0, x1 = int(x.min()), int(x.max())
    lo, hi = float(np.min(yv[ok])), float(np.max(yv[ok]))
    for _mx, my, _s, _t in marks:
        if math.isfinite(my):
            lo, hi = min(lo, my), max(hi, my)
    if area:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi == lo:
        pad = abs(hi) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    else:
        pad = (hi - lo) * 0.04
        lo, hi = lo - pad, (hi if area and hi == 0.0 else hi + pad)
    span_x = max(1, x1 - x0)

    def px(v: np.ndarray | int) -> np.ndarray:
        return left + (np.asarray(v, dtype=np.float64) - x0) / span_x * pw

    def py(v: np.ndarray | float) -> np.ndarray:
        return top + (hi - np.asarray(v, dtype=np.float64)) / (hi - lo) * ph

    # grid and axes
    ticks = _nice_ticks(lo, hi)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else abs(hi - lo)
    for tick in ticks:
        yy = float(py(tick))
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{yy:.1f}" y2="{yy:.1f}" class="gl"/>')
        parts.append(
            f'<text x="{left - 6}" y="{yy + 4:.1f}" class="al" text-anchor="end">'
            f"{_esc(_fmt_axis(tick, y_kind, step))}</text>"
        )
    for k in range(6):
        t = x0 + span_x * k // 5
        xx = float(px(t))
        anchor = "start" if k == 0 else "end" if k == 5 else "middle"
        parts.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{top}" y2="{top + ph}" class="gl"/>')
        parts.append(
            f'<text x="{xx:.1f}" y="{height - 10}" class="al" text-anchor="{anchor}">'
            f"{_date(t)}</text>"
        )
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="frame"/>')
    # the curve, broken at NaNs
    tx, ty = thin(x, yv)
    fin = np.isfinite(ty)
    runs = np.split(np.arange(len(ty)), np.flatnonzero(np.diff(fin.astype(np.int8)) != 0) + 1)
    for idx in runs:
        if len(idx) == 0 or not fin[idx[0]]:
            continue
        xs, ys = px(tx[idx]), py(ty[idx])
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs, ys, strict=True))
        if area:
            base = float(py(0.0))
            parts.append(
                f'<path d="M{xs[0]:.1f},{base:.1f} L{pts.replace(" ", " L")} '
                f'L{xs[-1]:.1f},{base:.1f} Z" fill="{color}" fill-opacity="0.25" stroke="none"/>'
            )
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.4"/>')
    # fill markers
    drawn = 0
    for mx, my, side, tip in marks[:_MAX_MARKERS]:
        if not math.isfinite(my):
            continue
        cx, cy = float(px(mx)), float(py(my))
        if side == "buy":
            d = f"M{cx:.1f},{cy - 1:.1f} l4.5,8 h-9 z"
            colour = _BUY
        else:
            d = f"M{cx:.1f},{cy + 1:.1f} l4.5,-8 h-9 z"
            colour = _SELL
        parts.append(f'<path d="{d}" fill="{colour}" class="mk"><title>{_esc(tip)}</title></path>')
        drawn += 1
    total = max(marker_count, len(marks))
    if total > drawn:
        parts.append(
            f'<text x="{left + pw}" y="18" class="al" text-anchor="end">'
            f"{drawn:,} of {total:,} fills marked</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def drawdown(equity: np.ndarray) -> np.ndarray:
    """``equity / running peak - 1`` (<= 0); NaN where equity is not positive."""
    eq = np.asarray(equity, dtype=np.float64)
    if len(eq) == 0:
        return eq
    peak = np.maximum.accumulate(np.where(np.isfinite(eq), eq, -np.inf))
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, eq / peak - 1.0, np.nan)
    return dd


# -- page -------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1000px;color:#111827;background:#fff;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e5e7eb}
.sub{color:#4b5563;margin:0 0 16px}.chart{display:block;max-width:100%;height:auto;margin:6px 0}
.ct{font-size:13px;font-weight:600;fill:#111827}.al{font-size:11px;fill:#4b5563}
.gl{stroke:#e5e7eb;stroke-width:1}.frame{fill:none;stroke:#9ca3af;stroke-width:1}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 10px;border-bottom:1px solid #f3f4f6;
text-align:right}th{text-align:left;background:#f9fafb}td.l,th.l{text-align:left}
.metrics td:first-child{text-align:left;color:#374151}.pos{color:#15803d}.neg{color:#b91c1c}
pre{background:#f9fafb;border:1px solid #e5e7eb;padding:10px;overflow:auto;font-size:12px}
.legend span{margin-right:14px}.note{color:#6b7280;font-size:12px}
"""


def _metrics_table(metrics: Mapping[str, Any]) -> str:
    rows = []
    shown = set()
    for key, label, kind in METRIC_ROWS:
        if key in metrics:
            shown.add(key)
            value = metrics[key]
            text = format_metric(value, kind)
            f = _finite(value)
            cls = ""
            if key in ("total_return", "cagr", "avg_trade") and f is not None and f != 0:
                cls = ' class="pos"' if f > 0 else ' class="neg"'
            rows.append(f"<tr><td>{_esc(label)}</td><td{cls}>{_esc(text)}</td></tr>")
    for key in sorted(set(metrics) - shown):
        rows.append(
            f"<tr><td>{_esc(key)}</td><td>{_esc(format_metric(metrics[key], 'num'))}</td></tr>"
        )
    return '<table class="metrics">' + "".join(rows) + "</table>"


def _trades_table(trades: Sequence[Mapping[str, Any]]) -> str:
    if not trades:
        return '<p class="note">No closed trades.</p>'
    cols = (
        "symbol",
        "side",
        "qty",
        "entry_ts",
        "entry_price",
        "exit_ts",
        "exit_price",
        "pnl",
        "return_pct",
    )
    head = "".join(
        f'<th class="{"l" if c in ("symbol", "side") else ""}">{_esc(c)}</th>' for c in cols
    )
    rows = []
    for t in list(trades)[-_MAX_TRADE_ROWS:]:
        cells = []
        for c in cols:
            v = t.get(c)
            if c.endswith("_ts"):
                text = _when(v)
            elif c in ("entry_price", "exit_price", "pnl"):
                f = _finite(v)
                text = "n/a" if f is None else f"{f:,.2f}"
            elif c == "return_pct":
                f = _finite(v)
                text = "n/a" if f is None else f"{f * 100:,.2f} %"
            elif c == "qty":
                f = _finite(v)
                text = "n/a" if f is None else f"{f:,.6g}"
            else:
                text = str(v)
            cls = "l" if c in ("symbol", "side") else ""
            pnl = _finite(v) if c == "pnl" else None
            if pnl:
                cls = "pos" if pnl > 0 else "neg"
            cells.append(f'<td class="{cls}">{_esc(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    note = ""
    if len(trades) > _MAX_TRADE_ROWS:
        note = (
            f'<p class="note">Showing the last {_MAX_TRADE_ROWS} of {len(trades):,} trades; '
            "trades.csv holds them all.</p>"
        )
    return note + f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def render_report(data: ReportData) -> str:
    """The HTML page of ``data``: a single self-contained file."""
    ts_ns = np.asarray(data.ts).astype("datetime64[ns]").astype(np.int64)
    equity = np.asarray(data.equity, dtype=np.float64)
    # Markers on the equity curve sit at the portfolio equity of their bar.
    eq_marks = []
    for m in data.markers:
        t = _ns(m.ts)
        i = int(np.searchsorted(ts_ns, t, side="right")) - 1
        if 0 <= i < len(equity):
            tip = f"{m.side} {m.qty:,.6g} {m.symbol} @ {m.price:,.4f} on {_date(t)}"
            eq_marks.append((t, float(equity[i]), m.side, tip))
    sections = [
        svg_chart(
            ts_ns,
            equity,
            title="Portfolio equity (fills marked)",
            markers=eq_marks,
            marker_count=len(data.markers),
        ),
        svg_chart(
            ts_ns,
            drawdown(equity),
            title="Drawdown",
            color=_SELL,
            y_kind="pct",
            area=True,
            height=180,
        ),
    ]
    symbol_charts = []
    for symbol in list(data.prices)[:_MAX_SYMBOL_CHARTS]:
        sts, close = data.prices[symbol]
        s_ns = np.asarray(sts).astype("datetime64[ns]").astype(np.int64)
        marks = [
            (_ns(m.ts), m.price, m.side, f"{m.side} {m.qty:,.6g} @ {m.price:,.4f} on {_when(m.ts)}")
            for m in data.markers
            if m.symbol == symbol
        ]
        symbol_charts.append(
            svg_chart(
                s_ns,
                np.asarray(close, dtype=np.float64),
                title=f"{symbol} close and fills",
                height=220,
                markers=marks,
                color="#374151",
            )
        )
    hidden = len(data.prices) - len(symbol_charts)
    legend = (
        f'<p class="legend note"><span style="color:{_BUY}">▲ buy fill</span>'
        f'<span style="color:{_SELL}">▼ sell fill</span> hover a marker for details</p>'
    )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        f"<h1>{_esc(data.title)}</h1>",
        f'<p class="sub">{_esc(data.subtitle)}</p>' if data.subtitle else "",
        legend,
        *sections,
        "<h2>Metrics</h2>",
        _metrics_table(data.metrics),
    ]
    if symbol_charts:
        body.append("<h2>Symbols</h2>")
        body.extend(symbol_charts)
        if hidden > 0:
            body.append(f'<p class="note">{hidden} more symbols not charted.</p>')
    body += [
        "<h2>Trades</h2>",
        _trades_table(data.trades),
        "<h2>Config</h2>",
        f"<pre>{_esc(_to_yaml(data.config))}</pre>",
        f'<p class="note">Generated {generated} by stocktrade. Curves are float64 views; exact '
        "money is in metrics.json, orders.csv and trades.csv.</p>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(data.title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(p for p in body if p)
        + "</body></html>\n"
    )
