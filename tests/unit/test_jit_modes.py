"""Kernels give the same results compiled (numba) and as plain Python (functions)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import data_file

SCRIPT = """
import json, sys
import stocktrade.jit as jit
if sys.argv[2] == "pure":
    jit.use_pure_python()
from stocktrade.backtest.config import BacktestConfig
from stocktrade.backtest.engine import run_backtest
from stocktrade.data.csv_bars import read_bars_csv
from stocktrade.domain.costs import CostModel
from stocktrade.strategies.baselines import RsiMeanReversion, SmaCrossover

bars = read_bars_csv(sys.argv[1])
data = {s: bars[s] for s in ("AAPL", "MSFT")}
out = {"numba": "numba" in sys.modules}
for name, strategy in (("sma", SmaCrossover(10, 30)), ("rsi", RsiMeanReversion())):
    cfg = BacktestConfig(initial_cash=100_000, costs=CostModel(commission_bps=5, slippage_bps=2),
                         mode="step")
    result = run_backtest(data, strategy, cfg)
    out[name] = {"equity": [float(x) for x in result.equity], "fills": len(result.fills)}
out["numba_after"] = "numba" in sys.modules
print(json.dumps(out))
"""


def run(mode: str) -> dict:
    path = data_file("daily_us_stocks_stocknet.csv")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(path), mode], capture_output=True,
                          text=True, timeout=300)
    if done.returncode != 0:
        pytest.fail(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_pure_python_kernels_equal_compiled_kernels_bar_for_bar() -> None:
    pure, compiled = run("pure"), run("jit")
    assert pure["numba"] is False and pure["numba_after"] is False
    assert compiled["numba_after"] is True
    for name in ("sma", "rsi"):
        assert pure[name]["fills"] == compiled[name]["fills"] > 0
        assert pure[name]["equity"] == compiled[name]["equity"]


def test_switching_after_compiled_kernels_exist_is_refused() -> None:
    code = ("import stocktrade.quant.features, stocktrade.jit as j\n"
            "try:\n    j.use_pure_python()\nexcept RuntimeError as e:\n    print('refused', e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("refused")
