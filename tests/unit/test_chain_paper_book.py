"""The chain's paper book, two steps a bar with JSON round trips in between, is the backtest."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from stocktrade.backtest.config import BacktestConfig
from stocktrade.backtest.engine import run_backtest
from stocktrade.backtest.result import to_datetime
from stocktrade.data.csv_bars import read_bars_csv
from stocktrade.domain.bars import Bar, Timeframe
from stocktrade.domain.costs import CostModel
from stocktrade.domain.orders import to_decimal
from stocktrade.domain.risk import RiskLimits
from stocktrade.errors import ValidationError
from stocktrade.quant.features import FeatureSpec, IncrementalFeatures, compute_features
from stocktrade.quant.observation import ObservationSpec
from stocktrade.services import paper_book as pb
from stocktrade.services import strategy_state
from stocktrade.strategies import BuyAndHold, RsiMeanReversion, SmaCrossover
from stocktrade.strategies.base import BarInput, PositionView
from tests.conftest import data_file

COSTS = CostModel(
    commission_bps=Decimal(5), slippage_bps=Decimal(2), slippage_range_frac=Decimal("0.1")
)


@pytest.fixture(scope="module")
def aapl() -> Any:
    return read_bars_csv(data_file("daily_us_stocks_stocknet.csv"))["AAPL"].slice(0, 300)


class LinearRuntime:
    """A deterministic numpy 'policy': logits = obs @ W (no onnxruntime needed)."""

    def __init__(self, obs_dim: int) -> None:
        rng = np.random.default_rng(4)
        self.w = rng.normal(0, 1, (obs_dim, 3)).astype(np.float32)
        self.obs_dim = obs_dim

    def logits_probs(self, obs: Any) -> tuple[Any, Any]:
        logits = np.asarray(obs, np.float32) @ self.w
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return logits, e / e.sum(axis=1, keepdims=True)


def policy(bars: Any) -> Any:
    from stocktrade.strategies.onnx_policy import OnnxPolicyStrategy

    spec = FeatureSpec()
    feats = compute_features(bars.open, bars.high, bars.low, bars.close, bars.volume, spec)
    obs = ObservationSpec(window=3).fit(feats, spec.names(), 0, len(bars))
    return lambda: OnnxPolicyStrategy(LinearRuntime(obs.obs_dim), feature_spec=spec, obs_spec=obs)


def domain_bars(bars: Any) -> list[Bar]:
    out = []
    for t in range(len(bars)):
        out.append(
            Bar(
                "AAPL",
                Timeframe.D1,
                to_datetime(bars.ts[t]).astimezone(UTC),
                *(
                    to_decimal(float(x[t]))
                    for x in (bars.open, bars.high, bars.low, bars.close, bars.volume)
                ),
            )
        )
    return out


def roundtrip(value: Any) -> Any:
    return None if value is None else json.loads(json.dumps(value))


@pytest.mark.parametrize("name", ["sma", "rsi", "hold", "policy"])
def test_stepping_and_deciding_with_state_saved_every_bar_equals_the_backtest(
    aapl: Any, name: str
) -> None:
    make = {
        "sma": lambda: SmaCrossover(5, 20),
        "rsi": lambda: RsiMeanReversion(14, 40, 60),
        "hold": lambda: BuyAndHold(),
        "policy": policy(aapl),
    }[name]
    limits = RiskLimits(
        min_bars_between_orders=1, warmup_bars=3, max_daily_loss_pct=Decimal("0.05")
    )
    config = BacktestConfig(initial_cash=Decimal(10_000), costs=COSTS, risk=limits, mode="step")
    result = run_backtest({"AAPL": aapl}, make(), config).books["AAPL"]
    book = pb.BookState(uuid.uuid4(), "AAPL", "1d", Decimal(10_000), Decimal(10_000))
    cfg = pb.BookConfig(costs=COSTS, limits=limits)
    fills, equity = [], []
    saved: Any = None
    features: Any = None
    for bar in domain_bars(aapl):
        strategy = make()  # a fresh instance every bar: a stateless function
        strategy_state.restore(strategy, saved)
        feats = IncrementalFeatures.from_state(features) if features else IncrementalFeatures()
        step = pb.step_bar(book, bar, strategy, feats, cfg)
        saved, features = roundtrip(strategy_state.snapshot(strategy)), roundtrip(feats.to_state())
        book.risk_state, book.signal = roundtrip(book.risk_state), roundtrip(book.signal)
        book.pending_order, book.lots = roundtrip(book.pending_order), roundtrip(book.lots)
        fills += [f.fill for f in step.fills if f.fill is not None]
        decided = pb.decide(book, cfg)
        book.risk_state, book.pending_order = (
            roundtrip(book.risk_state),
            roundtrip(book.pending_order),
        )
        equity.append(float(decided.equity))
    key = lambda f: (f.ts, f.side, f.qty, f.price, f.fee)  # noqa: E731
    assert [key(f) for f in fills] == [key(f) for f in result.fills]
    assert len(fills) >= 1
    assert np.array_equal(np.asarray(equity), result.equity)
    assert book.cash == result.ledger.cash


def test_a_book_refuses_to_step_before_deciding_or_to_step_an_old_bar(aapl: Any) -> None:
    book = pb.BookState(uuid.uuid4(), "AAPL", "1d", Decimal(1000), Decimal(1000))
    cfg = pb.BookConfig()
    bars = domain_bars(aapl.slice(0, 3))
    with pytest.raises(ValidationError, match="no bar awaiting a decision"):
        pb.decide(book, cfg)
    pb.step_bar(book, bars[1], BuyAndHold(), IncrementalFeatures(), cfg)
    with pytest.raises(ValidationError, match="must decide bar"):
        pb.step_bar(book, bars[2], BuyAndHold(), IncrementalFeatures(), cfg)
    pb.decide(book, cfg)
    with pytest.raises(ValidationError, match="not after the book's last bar"):
        pb.step_bar(book, bars[0], BuyAndHold(), IncrementalFeatures(), cfg)


def test_the_order_id_is_the_same_whoever_decides_the_bar(aapl: Any) -> None:
    agent = uuid.uuid4()
    bar = domain_bars(aapl.slice(0, 1))[0]
    same = pb.client_order_id(agent, "AAPL", bar.ts.astimezone(UTC))
    assert same == pb.client_order_id(agent, "AAPL", bar.ts + timedelta(0))
    assert same != pb.client_order_id(uuid.uuid4(), "AAPL", bar.ts)


def test_a_strategy_state_of_another_kind_or_spec_is_refused() -> None:
    sma = SmaCrossover(5, 20)
    sma.on_bar(BarInput(0, to_datetime(np.datetime64("2020-01-01")), 1, 1, 1, 1, 1), PositionView())
    state = strategy_state.snapshot(sma)
    with pytest.raises(ValidationError, match="kind"):
        strategy_state.restore(RsiMeanReversion(), state)
    with pytest.raises(ValidationError, match="feature spec"):
        strategy_state.restore(SmaCrossover(5, 30), state)
    fresh = SmaCrossover(5, 20)
    strategy_state.restore(fresh, json.loads(json.dumps(state)))
    assert strategy_state.snapshot(fresh) == state
