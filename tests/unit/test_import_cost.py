"""Cold starts: the library and the function targets stay free of heavy imports."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "onnxruntime", "google.cloud", "stable_baselines3", "tensorflow")


def imported_modules(statement: str) -> set[str]:
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", statement],
                            capture_output=True, text=True, timeout=120, check=True)
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def test_import_stocktrade_pulls_in_no_heavy_library() -> None:
    names = imported_modules("import stocktrade")
    assert "stocktrade" in names
    assert not [n for n in names if n.split(".")[0] in {h.split(".")[0] for h in HEAVY} and
                any(n == h or n.startswith(h + ".") for h in HEAVY)]


def test_core_packages_pull_in_no_heavy_library() -> None:
    names = imported_modules(
        "import stocktrade.config, stocktrade.domain.bars, stocktrade.data.csv_bars, "
        "stocktrade.adapters.postgres.bars, stocktrade.services.market_data, stocktrade.bootstrap"
    )
    heavy = [n for n in names if any(n == h or n.startswith(h + ".") for h in HEAVY)]
    assert heavy == []
