"""Features: batch == incremental bit for bit, no look-ahead, pandas references."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stocktrade.errors import ValidationError
from stocktrade.quant.features import (
    FeatureSpec,
    IncrementalFeatures,
    compute_features,
    ema,
    log_returns,
    macd,
    rolling_volatility,
    rsi,
    simple_returns,
    sma,
    volume_zscore,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LONG_HISTORY = DATA / "daily_us_long_history_kaggle.csv"

SMALL_SPEC = FeatureSpec(
    sma_windows=(5, 3),
    ema_windows=(4,),
    rsi_window=6,
    macd_fast=3,
    macd_slow=7,
    macd_signal=4,
    volatility_window=5,
    volume_window=4,
)


@pytest.fixture(scope="module")
def bars() -> dict[str, np.ndarray]:
    """Real AAPL daily bars (7,894 rows); skips when the shared data is absent."""
    if not LONG_HISTORY.exists():
        pytest.skip(f"real data not found at {LONG_HISTORY}")
    frame = pd.read_csv(LONG_HISTORY)
    aapl = frame[frame["symbol"] == "AAPL"]
    return {k: aapl[k].to_numpy(np.float64) for k in ("open", "high", "low", "close", "volume")}


def _synthetic(n: int, seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
    volume = rng.integers(1_000, 100_000, n).astype(np.float64)
    return {"open": close, "high": close, "low": close, "close": close, "volume": volume}


def _compute(b: dict[str, np.ndarray], spec: FeatureSpec) -> np.ndarray:
    return compute_features(b["open"], b["high"], b["low"], b["close"], b["volume"], spec)


def _run_incremental(
    b: dict[str, np.ndarray], spec: FeatureSpec, reload_every: int | None = None
) -> np.ndarray:
    inc = IncrementalFeatures(spec)
    rows = []
    for i in range(len(b["close"])):
        rows.append(
            inc.update(b["open"][i], b["high"][i], b["low"][i], b["close"][i], b["volume"][i])
        )
        if reload_every and i % reload_every == 0:
            inc = IncrementalFeatures.from_state(json.loads(json.dumps(inc.to_state())))
    return np.array(rows)


# --------------------------------------------------------------------------- identity


@pytest.mark.parametrize("spec", [FeatureSpec(), SMALL_SPEC], ids=["default", "small"])
def test_incremental_updates_equal_vectorised_rows_bit_for_bit(bars, spec):
    batch = _compute(bars, spec)
    live = _run_incremental(bars, spec)
    assert live.tobytes() == batch.tobytes()


def test_state_saved_as_json_every_bars_continues_bit_identically(bars):
    spec = FeatureSpec()
    batch = _compute(bars, spec)
    live = _run_incremental(bars, spec, reload_every=37)
    assert live.tobytes() == batch.tobytes()


def test_state_is_strict_json_with_no_nan_even_during_warmup():
    inc = IncrementalFeatures(FeatureSpec())
    inc.update(1.0, 1.0, 1.0, 10.0, 0.0)
    text = json.dumps(inc.to_state(), allow_nan=False)
    restored = IncrementalFeatures.from_state(json.loads(text))
    assert restored.bars_seen == 1
    assert restored.to_state() == inc.to_state()


def test_from_state_rejects_a_state_of_another_spec():
    state = IncrementalFeatures(FeatureSpec()).to_state()
    state["spec"] = SMALL_SPEC.to_dict()
    with pytest.raises(ValidationError, match="state list"):
        IncrementalFeatures.from_state(state)


def test_plain_helpers_equal_the_feature_columns_bit_for_bit(bars):
    spec = FeatureSpec()
    x = _compute(bars, spec)
    col = {name: x[:, i] for i, name in enumerate(spec.names())}
    c, v = bars["close"], bars["volume"]
    line, signal, hist = macd(c, 12, 26, 9)
    pairs = {
        "ret": simple_returns(c),
        "logret": log_returns(c),
        "rsi_14": rsi(c, 14),
        "macd": line,
        "macd_signal": signal,
        "macd_hist": hist,
        "vol_20": rolling_volatility(c, 20),
        "volume_z_20": volume_zscore(v, 20),
        "sma_10": sma(c, 10),
        "sma_50": sma(c, 50),
        "ema_20": ema(c, 20),
    }
    for name, values in pairs.items():
        assert values.tobytes() == col[name].tobytes(), name


# --------------------------------------------------------------------------- point in time


@pytest.mark.parametrize("t", [0, 5, 60, 500, 7000])
def test_values_up_to_t_do_not_change_when_later_bars_change(bars, t):
    spec = FeatureSpec()
    before = _compute(bars, spec)
    rng = np.random.default_rng(t)
    perturbed = {k: v.copy() for k, v in bars.items()}
    n_after = len(bars["close"]) - t - 1
    for key in ("open", "high", "low", "close"):
        perturbed[key][t + 1 :] = rng.uniform(1.0, 500.0, n_after)
    perturbed["volume"][t + 1 :] = rng.uniform(0.0, 1e9, n_after)
    after = _compute(perturbed, spec)
    assert after[: t + 1].tobytes() == before[: t + 1].tobytes()
    assert not np.array_equal(after[t + 1 :], before[t + 1 :], equal_nan=True)


def test_values_are_nan_exactly_during_each_columns_warmup(bars):
    spec = FeatureSpec()
    x = _compute(bars, spec)
    for i, (name, first) in enumerate(spec.column_warmups().items()):
        assert np.isnan(x[:first, i]).all(), name
        assert np.isfinite(x[first:, i]).all(), name
    assert spec.warmup == max(spec.column_warmups().values())
    assert np.isfinite(x[spec.warmup :]).all()
    assert np.isnan(x[spec.warmup - 1]).any()


def test_warmup_matches_the_slowest_column():
    assert SMALL_SPEC.warmup == 9  # MACD signal: slow + signal - 2
    assert FeatureSpec().warmup == 49  # sma_50 and ema_50
    assert FeatureSpec(sma_windows=(), ema_windows=()).warmup == 33


# --------------------------------------------------------------------------- pandas references


def _wilder_rsi(close: pd.Series, n: int) -> pd.Series:
    delta = close.diff()
    averages = []
    for part in (delta.clip(lower=0.0), (-delta).clip(lower=0.0)):
        seeded = part.copy()
        seeded.iloc[:n] = np.nan
        seeded.iloc[n] = part.iloc[1 : n + 1].mean()
        averages.append(
            seeded.iloc[n:].ewm(alpha=1.0 / n, adjust=False).mean().reindex(close.index)
        )
    gain, loss = averages
    return 100.0 - 100.0 / (1.0 + gain / loss)


def _assert_close(actual: np.ndarray, expected: pd.Series, rtol: float = 1e-9) -> None:
    exp = expected.to_numpy(np.float64)
    assert np.array_equal(np.isnan(actual), np.isnan(exp))
    np.testing.assert_allclose(actual, exp, rtol=rtol, atol=1e-12)


def test_features_match_straightforward_pandas_references(bars):
    spec = FeatureSpec()
    x = _compute(bars, spec)
    col = {name: x[:, i] for i, name in enumerate(spec.names())}
    c = pd.Series(bars["close"])
    v = pd.Series(bars["volume"])
    ret = c.pct_change()
    _assert_close(col["ret"], ret)
    _assert_close(col["logret"], np.log(c).diff())
    _assert_close(col["vol_20"], ret.rolling(20).std())
    _assert_close(col["volume_z_20"], (v - v.rolling(20).mean()) / v.rolling(20).std())
    for w in (10, 20, 50):
        _assert_close(col[f"sma_{w}"], c.rolling(w).mean())
        _assert_close(col[f"ema_{w}"], c.ewm(span=w, adjust=False, min_periods=w).mean())
    line = c.ewm(span=12, adjust=False).mean() - c.ewm(span=26, adjust=False).mean()
    signal = line.ewm(span=9, adjust=False).mean()
    line_ref = line.where(c.index >= 25)
    signal_ref = signal.where(c.index >= 33)
    # MACD is a difference of nearby prices: compare against the price scale.
    np.testing.assert_allclose(col["macd"], line_ref, rtol=0, atol=1e-9 * c.max())
    np.testing.assert_allclose(col["macd_signal"], signal_ref, rtol=0, atol=1e-9 * c.max())
    np.testing.assert_allclose(
        col["macd_hist"], (line - signal).where(c.index >= 33), rtol=0, atol=1e-9 * c.max()
    )
    np.testing.assert_allclose(col["rsi_14"], _wilder_rsi(c, 14), rtol=0, atol=1e-9)


def test_sma_sums_each_window_newest_to_oldest_bit_for_bit():
    # strategies.baselines reproduces this exact order; changing it breaks their identity.
    close = _synthetic(200)["close"]
    w = 13
    expected = np.full(close.shape, np.nan)
    for t in range(w - 1, len(close)):
        acc = 0.0
        for i in range(w):
            acc += close[t - i]
        expected[t] = acc / w
    assert sma(close, w).tobytes() == expected.tobytes()


def test_rsi_is_100_when_prices_only_rise_and_50_when_flat():
    rising = np.arange(1.0, 40.0)
    assert rsi(rising, 14)[14:].tolist() == [100.0] * (len(rising) - 14)
    assert rsi(np.full(30, 5.0), 14)[14:].tolist() == [50.0] * 16


def test_volume_zscore_is_zero_when_the_window_is_constant():
    vol = np.array([3.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    z = volume_zscore(vol, 3)
    assert np.isnan(z[:2]).all()
    assert z[4:].tolist() == [0.0, 0.0, 0.0]


def test_ema_seeds_with_the_first_value_like_pandas_adjust_false():
    x = np.array([10.0, 11.0, 12.0, 13.0])
    # span 3 -> alpha 0.5: y0 = 10, y1 = 10.5, y2 = 11.25, y3 = 12.125; y0, y1 hidden.
    np.testing.assert_array_equal(ema(x, 3), [np.nan, np.nan, 11.25, 12.125])
    np.testing.assert_allclose(ema(x, 1), pd.Series(x).ewm(span=1, adjust=False).mean())


# --------------------------------------------------------------------------- validation


def test_bad_close_in_history_is_rejected_with_its_index():
    b = _synthetic(30)
    b["close"] = b["close"].copy()
    b["close"][12] = np.nan
    with pytest.raises(ValidationError, match="index 12"):
        _compute(b, SMALL_SPEC)


def test_mismatched_lengths_are_rejected():
    b = _synthetic(30)
    with pytest.raises(ValidationError, match="same length"):
        compute_features(b["open"][:-1], b["high"], b["low"], b["close"], b["volume"], SMALL_SPEC)


def test_a_rejected_bar_leaves_the_incremental_state_unchanged():
    b = _synthetic(40)
    inc = IncrementalFeatures(SMALL_SPEC)
    rows = []
    for i in range(40):
        if i == 20:
            with pytest.raises(ValidationError):
                inc.update(1.0, 1.0, 1.0, -1.0, 5.0)
            with pytest.raises(ValidationError):
                inc.update(1.0, 1.0, 1.0, 5.0, float("nan"))
        rows.append(inc.update(1.0, 1.0, 1.0, b["close"][i], b["volume"][i]))
    assert np.array(rows).tobytes() == _compute(b, SMALL_SPEC).tobytes()


def test_spec_round_trips_through_json_and_rejects_unknown_fields():
    spec = FeatureSpec(sma_windows=(7,), ema_windows=(3, 9))
    assert FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ValidationError, match="expected"):
        FeatureSpec.from_dict({**spec.to_dict(), "atr_window": 14})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"macd_fast": 26, "macd_slow": 12},
        {"sma_windows": (5, 5)},
        {"volatility_window": 1},
        {"ema_windows": (0,)},
        {"rsi_window": 2.5},
    ],
)
def test_invalid_spec_is_rejected(kwargs):
    with pytest.raises(ValidationError):
        FeatureSpec(**kwargs)


def test_names_follow_the_configured_windows():
    assert SMALL_SPEC.names() == [
        "ret",
        "logret",
        "rsi_6",
        "macd",
        "macd_signal",
        "macd_hist",
        "vol_5",
        "volume_z_4",
        "sma_5",
        "sma_3",
        "ema_4",
    ]
    assert SMALL_SPEC.n_features == len(SMALL_SPEC.names())


# --------------------------------------------------------------------------- properties


@st.composite
def _specs(draw: st.DrawFn) -> FeatureSpec:
    slow = draw(st.integers(2, 12))
    return FeatureSpec(
        sma_windows=tuple(draw(st.sets(st.integers(1, 12), max_size=3))),
        ema_windows=tuple(draw(st.sets(st.integers(1, 12), max_size=3))),
        rsi_window=draw(st.integers(1, 10)),
        macd_fast=draw(st.integers(1, slow - 1)),
        macd_slow=slow,
        macd_signal=draw(st.integers(1, 6)),
        volatility_window=draw(st.integers(2, 10)),
        volume_window=draw(st.integers(2, 10)),
    )


@settings(max_examples=40, deadline=None)
@given(spec=_specs(), n=st.integers(1, 80), seed=st.integers(0, 2**32 - 1))
def test_any_spec_gives_identical_batch_and_incremental_rows(spec, n, seed):
    rng = np.random.default_rng(seed)
    close = np.round(20.0 * np.exp(np.cumsum(rng.normal(0.0, 0.05, n))), 2)
    volume = rng.choice([0.0, 0.1, 0.1, 3.0, 1e6], n)
    b = {"open": close, "high": close, "low": close, "close": close, "volume": volume}
    batch = _compute(b, spec)
    assert batch.shape == (n, spec.n_features)
    assert _run_incremental(b, spec, reload_every=3).tobytes() == batch.tobytes()
    warm = spec.column_warmups()
    for i, name in enumerate(spec.names()):
        assert np.isnan(batch[: warm[name], i]).all(), name
        assert np.isfinite(batch[warm[name] :, i]).all(), name
    for i, w in enumerate(spec.sma_windows):
        assert sma(close, w).tobytes() == batch[:, 8 + i].tobytes()


def test_live_bars_with_decimal_prices_give_the_same_row_as_floats():
    inc_dec, inc_float = IncrementalFeatures(SMALL_SPEC), IncrementalFeatures(SMALL_SPEC)
    for price, vol in (("10.10", "100"), ("10.25", "250"), ("9.95", "0")):
        p, v = Decimal(price), Decimal(vol)
        row_dec = inc_dec.update(p, p, p, p, v)
        row_float = inc_float.update(float(p), float(p), float(p), float(p), float(v))
    assert row_dec.tobytes() == row_float.tobytes()


def test_importing_the_quant_package_does_not_import_numba_or_numpy_kernels():
    code = "import sys, stocktrade.quant; assert 'numba' not in sys.modules, 'numba imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
