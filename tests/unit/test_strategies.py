"""Strategies: vectorised targets equal the bar-by-bar answers; the ONNX policy strategy."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pytest

from stocktrade.backtest.config import BacktestConfig
from stocktrade.backtest.engine import run_backtest
from stocktrade.data.arrays import BarArrays
from stocktrade.domain.actions import NO_ACTION, Action, action_target_table, target_for_action
from stocktrade.domain.costs import CostModel
from stocktrade.errors import ValidationError
from stocktrade.quant.features import FeatureSpec, compute_features, sma
from stocktrade.quant.observation import ObservationSpec
from stocktrade.strategies import (
    BarInput,
    BuyAndHold,
    PositionView,
    RsiMeanReversion,
    SmaCrossover,
    Strategy,
    VectorisedStrategy,
)

T0 = datetime(2020, 1, 1, tzinfo=UTC)


def random_bars(n: int = 600, seed: int = 3, symbol: str = "SYN") -> BarArrays:
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    open_ = np.concatenate(([close[0]], close[:-1])) * np.exp(rng.normal(0, 0.003, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    ts = np.datetime64("2010-01-01", "ns") + np.arange(n) * np.timedelta64(1, "D")
    return BarArrays(symbol, "1d", ts, open_, high, low, close, rng.uniform(1e5, 1e6, n))


def step_targets(strategy: Strategy, bars: BarArrays) -> np.ndarray:
    strategy.reset()
    out = np.empty(len(bars))
    for t in range(len(bars)):
        bar = BarInput(
            t, T0, bars.open[t], bars.high[t], bars.low[t], bars.close[t], bars.volume[t]
        )
        out[t] = strategy.on_bar(bar, PositionView()).target
    return out


@pytest.mark.parametrize(
    "strategy",
    [
        BuyAndHold(),
        BuyAndHold(0.5),
        SmaCrossover(10, 30),
        SmaCrossover(5, 20, mode="cross"),
        SmaCrossover(3, 7, allow_short=True, size=0.8),
        RsiMeanReversion(),
        RsiMeanReversion(7, 25, 75, allow_short=True),
    ],
    ids=lambda s: f"{s.name}-{s.params()}",
)
def test_vectorised_targets_equal_the_bar_by_bar_answers_bit_for_bit(strategy) -> None:
    bars = random_bars()
    assert isinstance(strategy, Strategy) and isinstance(strategy, VectorisedStrategy)
    vec = strategy.targets(bars)
    np.testing.assert_array_equal(vec, step_targets(strategy, bars))
    assert np.isfinite(vec).sum() > len(bars) // 2


def test_sma_crossover_state_mode_is_long_exactly_when_fast_sma_is_above_slow() -> None:
    bars = random_bars()
    fast, slow = sma(bars.close, 10), sma(bars.close, 30)
    targets = SmaCrossover(10, 30).targets(bars)
    valid = ~np.isnan(slow)
    np.testing.assert_array_equal(targets[valid], np.where(fast > slow, 1.0, 0.0)[valid])
    assert np.isnan(targets[~valid]).all() and (~valid).sum() == 29


def test_sma_crossover_cross_mode_waits_for_a_strict_crossing() -> None:
    close = np.array([10, 9, 8, 7, 8, 9, 10, 11, 10, 9, 8, 7.0])
    bars = BarArrays(
        "X",
        "1d",
        np.arange(12).astype("datetime64[D]").astype("datetime64[ns]"),
        close,
        close,
        close,
        close,
        np.ones(12),
    )
    got = SmaCrossover(1, 3, mode="cross").targets(bars)
    # sma3 from bar 2; the close crosses above it at bar 4 and below it at bar 8.
    expected = [math.nan] * 4 + [1.0] * 4 + [0.0] * 4
    np.testing.assert_array_equal(got, expected)


def test_rsi_mean_reversion_buys_oversold_and_exits_overbought() -> None:
    falling = np.linspace(100, 60, 30)
    rising = np.linspace(60, 120, 30)
    close = np.concatenate((falling, rising))
    n = len(close)
    bars = BarArrays(
        "X",
        "1d",
        np.arange(n).astype("datetime64[D]").astype("datetime64[ns]"),
        close,
        close,
        close,
        close,
        np.ones(n),
    )
    t = RsiMeanReversion(14).targets(bars)
    assert np.isnan(t[:14]).all()
    assert t[29] == 1.0 and t[-1] == 0.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: SmaCrossover(30, 10),
        lambda: SmaCrossover(10, 30, mode="both"),  # type: ignore[arg-type]
        lambda: RsiMeanReversion(14, 70, 30),
        lambda: BuyAndHold(0),
        lambda: BuyAndHold(math.inf),
    ],
)
def test_invalid_strategy_parameters_are_rejected(make) -> None:
    with pytest.raises(ValidationError):
        make()


def test_policy_actions_map_to_targets() -> None:
    assert math.isnan(action_target_table(allow_short=False)[Action.HOLD])
    assert target_for_action(Action.BUY, 0.0, allow_short=False) == 1.0
    assert target_for_action(Action.SELL, 1.0, allow_short=False) == 0.0
    assert target_for_action(Action.SELL, 1.0, allow_short=True, size=0.5) == -0.5
    assert target_for_action(Action.HOLD, -0.5, allow_short=True) == -0.5
    assert target_for_action(NO_ACTION, 0.25, allow_short=True) == 0.25


# -- ONNX policy -------------------------------------------------------------------------------

onnx = pytest.importorskip("onnx", reason="onnx is not installed")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")


def build_mlp_onnx(
    obs_dim: int, hidden: int = 32, seed: int = 0, position_gain: float = 6.0
) -> bytes:
    """A small MLP policy obeying the I/O contract: obs [batch, D] -> logits, probs [batch, 3]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 1 / np.sqrt(obs_dim), (obs_dim, hidden)).astype(np.float32)
    w1[-2] *= position_gain  # the position slot: make the action depend on it
    b1 = rng.normal(0, 0.1, hidden).astype(np.float32)
    w2 = rng.normal(0, 1 / np.sqrt(hidden), (hidden, 3)).astype(np.float32)
    b2 = np.zeros(3, np.float32)
    nodes = [
        helper.make_node("MatMul", ["obs", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["l0"]),
        helper.make_node("Add", ["l0", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", obs_dim])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3]),
        ],
        [
            numpy_helper.from_array(a, name)
            for a, name in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


class RawOrtRuntime:
    """onnxruntime used directly (no project adapter), to show any runtime object works."""

    def __init__(self, model: bytes) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self._s = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])

    def logits_probs(self, obs):
        logits, probs = self._s.run(["logits", "probs"], {"obs": np.asarray(obs, np.float32)})
        return logits, probs


@pytest.fixture(scope="module")
def policy_parts():
    bars = random_bars(900, seed=11)
    spec = FeatureSpec()
    feats = compute_features(bars.open, bars.high, bars.low, bars.close, bars.volume, spec)
    obs_spec = ObservationSpec(window=8).fit(feats, spec.names(), 0, 500)
    return bars, spec, obs_spec, build_mlp_onnx(obs_spec.obs_dim)


def test_policy_batch_actions_equal_bar_by_bar_actions_for_every_position_state(
    policy_parts,
) -> None:
    from stocktrade.strategies.onnx_policy import OnnxPolicyStrategy

    bars, spec, obs_spec, model = policy_parts
    strategy = OnnxPolicyStrategy(model, feature_spec=spec, obs_spec=obs_spec)
    batch = strategy.batch_actions(bars)
    first = spec.warmup + obs_spec.window - 1
    assert strategy.warmup == first
    assert (batch[:first] == NO_ACTION).all() and (batch[first:] >= 0).all()
    assert len(np.unique(batch[first:])) == 3  # the test policy uses every action
    for j, qty in enumerate((-5.0, 0.0, 5.0)):
        strategy.reset()
        for t in range(len(bars)):
            bar = BarInput(
                t, T0, bars.open[t], bars.high[t], bars.low[t], bars.close[t], bars.volume[t]
            )
            sig = strategy.on_bar(bar, PositionView(qty=qty))
            assert sig.action == batch[t, j]
            if sig.action >= 0:
                assert sig.probs is not None and 0 < sig.confidence <= 1


def test_policy_backtest_batched_path_equals_the_bar_by_bar_path(policy_parts) -> None:
    from stocktrade.strategies.onnx_policy import OnnxPolicyStrategy

    bars, spec, obs_spec, model = policy_parts
    other = random_bars(900, seed=12, symbol="OTHER")
    data = {"SYN": bars, "OTHER": other}
    config = BacktestConfig(
        initial_cash=Decimal(20_000), costs=CostModel(commission_bps=Decimal(5))
    )
    for runtime in (model, RawOrtRuntime(model)):
        strategy = OnnxPolicyStrategy(runtime, feature_spec=spec, obs_spec=obs_spec)
        fast = run_backtest(data, strategy, config)
        step = run_backtest(
            data,
            strategy,
            BacktestConfig(**{**config.__dict__, "mode": "step", "check_invariants": True}),
        )
        assert (fast.path, step.path) == ("policy_batch", "step")
        for s in data:
            assert fast.books[s].records.equals(step.books[s].records)
            np.testing.assert_allclose(fast.books[s].equity, step.books[s].equity, rtol=1e-12)
        assert len(fast.fills) >= 10
        fast.verify()
        step.verify()


def test_policy_strategy_refuses_a_model_that_does_not_fit_its_observation(policy_parts) -> None:
    from stocktrade.strategies.onnx_policy import OnnxPolicyStrategy

    _bars, spec, obs_spec, _model = policy_parts
    with pytest.raises(ValidationError, match="obs_dim"):
        OnnxPolicyStrategy(
            build_mlp_onnx(obs_spec.obs_dim + 1), feature_spec=spec, obs_spec=obs_spec
        )
    with pytest.raises(ValidationError, match="fitted"):
        OnnxPolicyStrategy(_model, feature_spec=spec, obs_spec=ObservationSpec(window=8))
