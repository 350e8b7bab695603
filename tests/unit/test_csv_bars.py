from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pytest

from stocktrade.data.csv_bars import infer_timeframe, parse_bar_bytes, read_bars_csv
from stocktrade.domain.bars import Bar, Timeframe
from stocktrade.errors import ValidationError
from tests.conftest import data_file

HEADER = b"timestamp,symbol,open,high,low,close,volume\n"
GOOD = [
    b"2015-01-02T00:00:00Z,AAA,10,11,9,10.5,1000\n",
    b"2015-01-05T00:00:00Z,AAA,10.5,12,10,11,2000\n",
    b"2015-01-06T00:00:00Z,AAA,11,11.5,10.5,11.2,1500\n",
]


def parse(*rows: bytes, header: bytes = HEADER):
    return parse_bar_bytes(header + b"".join(rows), "f.csv")


def test_good_rows_parse_with_inferred_daily_timeframe() -> None:
    parsed = parse(*GOOD)
    assert parsed.rows == 3
    assert parsed.timeframes == {"AAA": Timeframe.D1}
    assert parsed.frame["close"].tolist() == [10.5, 11.0, 11.2]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (b"2015-01-07T00:00:00Z,AAA,10,9,11,10,100\n", "OHLC inconsistent"),
        (b"2015-01-07T00:00:00Z,AAA,-1,11,-2,10,100\n", "prices must be positive"),
        (b"2015-01-07T00:00:00Z,AAA,10,11,9,abc,100\n", "close 'abc' is not a finite number"),
        (b"2015-01-07,AAA,10,11,9,10,100\n", "not ISO 8601 UTC"),
        (b"2015-01-07T00:00:00,AAA,10,11,9,10,100\n", "not ISO 8601 UTC"),
        (b"2015-13-45T00:00:00Z,AAA,10,11,9,10,100\n", "not ISO 8601 UTC"),
        (b"2015-01-07T00:00:00Z,AAA,10,11,9,10,-5\n", "volume must be >= 0"),
        (b"2015-01-07T00:00:00Z,,10,11,9,10,5\n", "symbol"),
        (b"2015-01-05T00:00:00Z,AAA,10,11,9,10,5\n", "duplicate (symbol, timestamp)"),
    ],
)
def test_bad_row_is_rejected_with_its_line_and_reason(row: bytes, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse(*GOOD, row)
    message = str(info.value)
    assert "f.csv:5:" in message  # header is line 1, the bad row is the 4th data row
    assert reason in message


def test_every_bad_line_is_named_up_to_a_limit() -> None:
    bad = [f"2016-01-{d:02d}T00:00:00Z,AAA,10,9,11,10,1\n".encode() for d in range(1, 31)]
    with pytest.raises(ValidationError) as info:
        parse(*bad)
    assert "30 bad rows" in str(info.value)
    assert "... and 10 more" in str(info.value)


def test_header_must_start_with_the_bar_columns() -> None:
    with pytest.raises(ValidationError, match=":1: header must start with"):
        parse(*GOOD, header=b"date,ticker,open,high,low,close,volume\n")


def test_offsets_are_converted_to_utc() -> None:
    parsed = parse(b"2015-01-02T09:30:00-05:00,AAA,10,11,9,10.5,1000\n")
    assert parsed.frame["ts"].iloc[0] == datetime(2015, 1, 2, 14, 30, tzinfo=UTC)


def test_extra_columns_are_kept() -> None:
    parsed = parse(b"2015-01-02T00:00:00Z,AAA,10,11,9,10.5,1000,9.9\n",
                   header=b"timestamp,symbol,open,high,low,close,volume,adj_close\n")
    assert parsed.extras == ["adj_close"]
    assert parsed.frame["adj_close"].iloc[0] == "9.9"


def test_minute_bars_infer_a_minute_timeframe() -> None:
    ts = np.arange(np.datetime64("2023-03-01T00:00"), np.datetime64("2023-03-01T01:00"),
                   np.timedelta64(1, "m")).astype("datetime64[ns]")
    assert infer_timeframe(ts) == Timeframe.M1


def test_real_stocknet_file_validates_and_splits_per_symbol() -> None:
    bars = read_bars_csv(data_file("daily_us_stocks_stocknet.csv"))
    assert len(bars) == 60
    assert sum(len(b) for b in bars.values()) == 49_582
    aapl = bars["AAPL"]
    assert aapl.ts[0] == np.datetime64("2012-09-04T00:00:00", "ns")
    assert bool(np.all(aapl.low <= aapl.close)) and bool(np.all(aapl.close <= aapl.high))


def test_domain_bar_refuses_inconsistent_prices() -> None:
    with pytest.raises(ValueError, match="OHLC inconsistent"):
        Bar("AAA", Timeframe.D1, datetime(2015, 1, 2, tzinfo=UTC), Decimal(10), Decimal(9),
            Decimal(8), Decimal(10), Decimal(1))


def test_domain_bar_refuses_naive_timestamps() -> None:
    with pytest.raises(ValueError, match="UTC-aware"):
        Bar("AAA", Timeframe.D1, datetime(2015, 1, 2), Decimal(10), Decimal(11),
            Decimal(9), Decimal(10), Decimal(1))


def test_timeframe_parse_accepts_aliases_and_names_the_choices() -> None:
    assert Timeframe.parse("daily") is Timeframe.D1
    with pytest.raises(ValueError, match="expected one of 1m, 5m"):
        Timeframe.parse("2d")
