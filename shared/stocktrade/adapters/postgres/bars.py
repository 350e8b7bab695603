"""Bars in Postgres: COPY-speed upserts and range queries returning numpy arrays."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from stocktrade.data.arrays import BarArrays
from stocktrade.data.csv_bars import BarFile
from stocktrade.domain.bars import SymbolSummary, Timeframe, UpsertCounts
from stocktrade.errors import NotFoundError, ValidationError

if TYPE_CHECKING:
    import psycopg
    from psycopg.sql import Composed


_COPY_CHUNK = 1 << 20  # bytes per COPY write
# Extra CSV columns with a home in the bars table; other extras are ignored.
KNOWN_EXTRAS = ("adj_close", "dividend", "split")


IMPORT_GID_PREFIX = "stocktrade-import-"


def _tpc(command: str, gid: str) -> Composed:
    from psycopg import sql

    return sql.SQL(command + " {}").format(sql.Literal(gid))  # type: ignore[return-value]


def _set_import_context(cur: psycopg.Cursor, timeframe: str, source: str) -> None:
    cur.execute("SELECT set_config('stocktrade.timeframe', %s, true), "
                "set_config('stocktrade.source', %s, true)", (timeframe, source))


def _split_rows(data: bytes, rows: int, parts: int) -> list[bytes]:
    """Cut a CSV (header + rows) into ``parts`` CSVs of consecutive rows, each with the header."""
    if parts <= 1 or rows < 50_000:
        return [data]
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    header_end = int(newlines[0]) + 1
    header = data[:header_end]
    bounds = [header_end] + [int(newlines[(rows * k) // parts]) + 1 for k in range(1, parts)] + [len(data)]
    return [header + data[a:b] for a, b in itertools.pairwise(bounds)]


def recover_prepared_imports(conn: psycopg.Connection) -> dict[str, str]:
    """Finish parallel imports interrupted between PREPARE and COMMIT (call at start-up).

    Parts are committed in order 0..n-1 and rolled back in order n-1..0. So if part 0 is
    gone while others are still prepared, the commit had begun: commit the rest. If part 0
    is still prepared, no commit happened: roll everything back.
    """
    rows = conn.execute(
        "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE %s AND database = current_database()",
        (IMPORT_GID_PREFIX + "%",),
    ).fetchall()
    groups: dict[str, list[str]] = {}
    for (gid,) in rows:
        groups.setdefault(gid.rsplit("-", 1)[0], []).append(gid)
    outcome = {}
    previous = conn.autocommit
    conn.autocommit = True
    try:
        for group, gids in groups.items():
            commit = f"{group}-0" not in gids
            for gid in sorted(gids, key=lambda g: int(g.rsplit("-", 1)[1]), reverse=not commit):
                conn.execute(_tpc(("COMMIT" if commit else "ROLLBACK") + " PREPARED", gid))
            outcome[group] = "committed" if commit else "rolled back"
    finally:
        conn.autocommit = previous
    return outcome


class PostgresBarRepository:
    """Reads and writes the ``bars`` table.

    Args:
        conn: an open psycopg connection to a migrated database. The repository never
            commits on its own except in :meth:`upsert_file`, which is one transaction.
    """

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    # -- writes ----------------------------------------------------------------------------
    def import_csv(
        self, data: bytes, path: str, *, source: str, timeframe: Timeframe | None = None,
        progress: Callable[[int], None] | None = None, workers: int = 2,
    ) -> tuple[BarFile, UpsertCounts]:
        """Validate and upsert one CSV bar file, all or nothing.

        The whole file is validated first; a bad file raises before anything is written.
        Rows new to the table are streamed with ``COPY`` straight into ``bars``; with
        ``workers > 1`` and a server that allows prepared transactions, the file is cut
        into row ranges loaded in parallel on separate connections and committed together
        with two-phase commit (see :func:`recover_prepared_imports`), so the import stays
        atomic. When some keys already exist (a re-import, an overlapping file) the bytes
        go through a staging table and ``INSERT ... ON CONFLICT``, where a row equal to the
        stored one is left untouched: importing the same file twice changes nothing.

        The connection must be in autocommit mode (each import is its own transaction).

        Raises:
            ValidationError: the file was rejected (names file, line and reason).
        """
        import psycopg

        from stocktrade.data.csv_bars import parse_bar_bytes

        if not self.conn.autocommit:
            raise ValueError("import_csv needs an autocommit connection (it is one transaction)")
        parsed = parse_bar_bytes(data, path, timeframe=timeframe)
        extras = parsed.extras
        timeframes = set(parsed.timeframes.values())
        if len(timeframes) == 1 and all(c in KNOWN_EXTRAS for c in extras) and not self._keys_exist(parsed):
            (tf,) = timeframes
            columns = ["ts", "symbol", "open", "high", "low", "close", "volume", *extras]
            parts = _split_rows(data, parsed.rows, workers if self._two_phase_ok() else 1)
            try:
                if len(parts) == 1:
                    with self.conn.transaction(), self.conn.cursor() as cur:
                        _set_import_context(cur, tf.value, source)
                        self._copy(cur, "bars", columns, data, progress)
                else:
                    self._copy_two_phase(parts, columns, tf.value, source)
                return parsed, UpsertCounts(parsed.rows, 0, 0)
            except psycopg.errors.UniqueViolation:
                pass  # a concurrent import wrote some of these keys first: merge instead
        columns = ["ts", "symbol", "open", "high", "low", "close", "volume"]
        columns += [c if c in KNOWN_EXTRAS else f"ignored_{i}" for i, c in enumerate(extras)]
        with self.conn.transaction():
            return parsed, self._merge(data, parsed, columns, source, progress)

    def _keys_exist(self, parsed: BarFile) -> bool:
        frame = parsed.frame
        row = self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM bars WHERE symbol = ANY(%s) AND timeframe = ANY(%s) "
            "AND ts BETWEEN %s AND %s)",
            (list(parsed.timeframes), sorted({t.value for t in parsed.timeframes.values()}),
             frame["ts"].min().to_pydatetime(), frame["ts"].max().to_pydatetime()),
        ).fetchone()
        return bool(row and row[0])

    def _two_phase_ok(self) -> bool:
        row = self.conn.execute("SELECT current_setting('max_prepared_transactions')::int").fetchone()
        return bool(row and row[0] >= 2)

    def _copy_two_phase(self, parts: list[bytes], columns: list[str], timeframe: str,
                        source: str) -> None:
        """Load row ranges in parallel, then commit them together (two-phase commit)."""
        import psycopg

        group = f"{IMPORT_GID_PREFIX}{uuid.uuid4().hex}"
        gids = [f"{group}-{i}" for i in range(len(parts))]
        dsn = self.conn.info.dsn
        password = self.conn.info.password
        conns = [psycopg.connect(dsn, password=password, autocommit=False) if password
                 else psycopg.connect(dsn, autocommit=False) for _ in parts]
        errors: list[BaseException] = []
        prepared: list[str] = []

        def load(conn: psycopg.Connection, part: bytes, gid: str) -> None:
            try:
                with conn.cursor() as cur:
                    _set_import_context(cur, timeframe, source)
                    self._copy(cur, "bars", columns, part, None)
                    cur.execute(_tpc("PREPARE TRANSACTION", gid))
                prepared.append(gid)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=load, args=(c, p, g)) for c, p, g in
                   zip(conns, parts, gids, strict=True)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                for gid in reversed(gids):  # reverse order: see recover_prepared_imports
                    if gid in prepared:
                        self.conn.execute(_tpc("ROLLBACK PREPARED", gid))
                raise errors[0]
            for gid in gids:
                self.conn.execute(_tpc("COMMIT PREPARED", gid))
        finally:
            for c in conns:
                c.close()

    @staticmethod
    def _copy(cur: psycopg.Cursor, table: str, columns: list[str], data: bytes,
              progress: Callable[[int], None] | None) -> None:
        quoted = ", ".join(f'"{c}"' for c in columns)
        with cur.copy(f"COPY {table} ({quoted}) FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
            view = memoryview(data)
            for start in range(0, len(view), _COPY_CHUNK):
                copy.write(view[start : start + _COPY_CHUNK])
                if progress:
                    progress(min(start + _COPY_CHUNK, len(view)))

    def _merge(self, data: bytes, parsed: BarFile, columns: list[str], source: str,
               progress: Callable[[int], None] | None) -> UpsertCounts:
        extras = [c for c in columns[7:] if c in KNOWN_EXTRAS]
        staging_cols = ", ".join(f'"{c}" text' for c in columns)
        extra_select = "".join(f", nullif(s.{c}, '')::numeric" for c in extras)
        extra_set = "".join(f", {c} = EXCLUDED.{c}" for c in extras)
        extra_cmp_b = "".join(f", b.{c}" for c in extras)
        extra_cmp_e = "".join(f", EXCLUDED.{c}" for c in extras)
        with self.conn.cursor() as cur:
            cur.execute(f"CREATE TEMP TABLE bars_staging ({staging_cols}) ON COMMIT DROP")
            cur.execute(
                "CREATE TEMP TABLE bars_timeframes (symbol text PRIMARY KEY, timeframe text) "
                "ON COMMIT DROP"
            )
            cur.executemany(
                "INSERT INTO bars_timeframes VALUES (%s, %s)",
                [(s, tf.value) for s, tf in parsed.timeframes.items()],
            )
            self._copy(cur, "bars_staging", columns, data, progress)
            cur.execute(
                f"""
                WITH merged AS (
                    INSERT INTO bars AS b (symbol, timeframe, ts, open, high, low, close, volume,
                                           source{"".join(", " + c for c in extras)})
                    SELECT s.symbol, t.timeframe, s.ts::timestamptz, s.open::numeric,
                           s.high::numeric, s.low::numeric, s.close::numeric, s.volume::numeric,
                           %s{extra_select}
                    FROM bars_staging s JOIN bars_timeframes t USING (symbol)
                    ON CONFLICT (symbol, timeframe, ts) DO UPDATE
                    SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
                        close = EXCLUDED.close, volume = EXCLUDED.volume, source = EXCLUDED.source,
                        ingested_at = now(){extra_set}
                    WHERE (b.open, b.high, b.low, b.close, b.volume{extra_cmp_b})
                          IS DISTINCT FROM
                          (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close,
                           EXCLUDED.volume{extra_cmp_e})
                    RETURNING (xmax = 0) AS inserted
                )
                SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)
                FROM merged
                """,
                (source,),
            )
            row = cur.fetchone()
            assert row is not None
            inserted, updated = int(row[0]), int(row[1])
        return UpsertCounts(inserted, updated, parsed.rows - inserted - updated)

    # -- reads -----------------------------------------------------------------------------
    def load(
        self, symbol: str, timeframe: str = "1d", start: datetime | str | None = None,
        end: datetime | str | None = None,
    ) -> BarArrays:
        """Bars of one symbol with ``start <= ts <= end`` (inclusive; None = unbounded).

        Raises:
            NotFoundError: the symbol has no bars at this timeframe at all.
        """
        sql = (
            "SELECT ts, open::float8, high::float8, low::float8, close::float8, volume::float8 "
            "FROM bars WHERE symbol = %s AND timeframe = %s"
        )
        params: list[object] = [symbol, timeframe]
        if start is not None:
            sql += " AND ts >= %s"
            params.append(start)
        if end is not None:
            sql += " AND ts <= %s"
            params.append(end)
        sql += " ORDER BY ts"
        with self.conn.cursor(binary=True) as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
        if not rows and not self.has_symbol(symbol, timeframe):
            raise NotFoundError(f"no {timeframe} bars stored for symbol {symbol!r}")
        if not rows:
            empty = np.empty(0)
            return BarArrays(symbol, timeframe, np.empty(0, "datetime64[ns]"), empty, empty,
                             empty, empty, empty)
        cols = list(zip(*rows, strict=True))
        ts = np.array([t.timestamp() for t in cols[0]], dtype=np.float64)
        ts_ns = (np.round(ts * 1e6).astype(np.int64) * 1000).astype("datetime64[ns]")
        return BarArrays(symbol, timeframe, ts_ns, *(np.asarray(c, dtype=np.float64) for c in cols[1:]))

    def load_frame(self, symbol: str, timeframe: str = "1d", start: datetime | str | None = None,
                   end: datetime | str | None = None):  # -> pd.DataFrame
        """Like :meth:`load`, as a DataFrame (UTC index; Open High Low Close Volume)."""
        return self.load(symbol, timeframe, start, end).to_frame()

    def has_symbol(self, symbol: str, timeframe: str | None = None) -> bool:
        if timeframe is None:
            row = self.conn.execute("SELECT 1 FROM bars WHERE symbol = %s LIMIT 1", (symbol,)).fetchone()
        else:
            row = self.conn.execute(
                "SELECT 1 FROM bars WHERE symbol = %s AND timeframe = %s LIMIT 1", (symbol, timeframe)
            ).fetchone()
        return row is not None

    def count(self, symbol: str | None = None, timeframe: str | None = None,
              start: datetime | str | None = None, end: datetime | str | None = None) -> int:
        """Stored bars, optionally of one symbol and timeframe and inside ``[start, end]``."""
        sql = "SELECT count(*) FROM bars WHERE true"
        params: list[object] = []
        if symbol is not None:
            sql += " AND symbol = %s"
            params.append(symbol)
        if timeframe is not None:
            sql += " AND timeframe = %s"
            params.append(timeframe)
        if start is not None:
            sql += " AND ts >= %s"
            params.append(start)
        if end is not None:
            sql += " AND ts <= %s"
            params.append(end)
        row = self.conn.execute(sql, params).fetchone()
        return int(row[0]) if row else 0

    def symbols(self, timeframe: str | None = None) -> list[str]:
        sql = "SELECT DISTINCT symbol FROM bars"
        params: list[object] = []
        if timeframe:
            sql += " WHERE timeframe = %s"
            params.append(timeframe)
        return [r[0] for r in self.conn.execute(sql + " ORDER BY symbol", params)]

    def summary(self, symbols: list[str] | None = None) -> list[SymbolSummary]:
        """Per symbol and timeframe: date range, bar count and a few statistics."""
        sql = """
            SELECT symbol, timeframe, min(ts), max(ts), count(*),
                   (array_agg(close ORDER BY ts))[1]::float8,
                   (array_agg(close ORDER BY ts DESC))[1]::float8,
                   min(low)::float8, max(high)::float8, avg(volume)::float8
            FROM bars {where} GROUP BY symbol, timeframe ORDER BY symbol, timeframe
        """
        if symbols:
            rows = self.conn.execute(sql.format(where="WHERE symbol = ANY(%s)"), (symbols,)).fetchall()
        else:
            rows = self.conn.execute(sql.format(where="")).fetchall()
        return [SymbolSummary(*r) for r in rows]

    def require(self, symbol: str, timeframe: str, start: datetime | str | None,
                end: datetime | str | None) -> BarArrays:
        """Like :meth:`load` but an empty range is a :class:`ValidationError`."""
        bars = self.load(symbol, timeframe, start, end)
        if len(bars) == 0:
            raise ValidationError(
                f"no {timeframe} bars for {symbol} between {start} and {end}; check the date range"
            )
        return bars
