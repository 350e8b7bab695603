"""Cold-start import cost of each function target, over a bare ``import functions_framework``.

For every target it runs a fresh interpreter with ``python -X importtime`` that imports
functions-framework, then ``functions/main.py``, then everything the target's first call
imports (``main.preload(target)``: the delivery service, psycopg, the Pub/Sub client for the
chain targets, ONNX Runtime for ``predict``), and sums the top-level import times. The figure
printed is that sum minus the same sum for ``import functions_framework`` alone (best of N
runs each; the budget is 0.3 s). It also says whether torch was imported (it must not be).

Run: .venv/bin/python bench/bench_cold_start.py [runs]   (about 20 s)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = ["on_bar", "on_signal", "on_order", "on_fill", "cron_relay", "api", "predict"]
BUDGET_S = 0.3


def import_cost(statement: str) -> tuple[float, set[str]]:
    """Top-level import time in seconds (sum of cumulative times) and the modules imported."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=REPO,
    )
    total_us = 0
    names = set()
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|", 2)
        names.add(name.strip())
        if not name[1:].startswith(" "):  # top level: exactly one space before the name
            total_us += int(cumulative)
    return total_us / 1e6, names


def best(statement: str, runs: int) -> tuple[float, set[str]]:
    results = [import_cost(statement) for _ in range(runs)]
    return min(r[0] for r in results), results[0][1]


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    base, _ = best("import functions_framework", runs)
    prefix = (
        "import sys; import functions_framework; "
        f"sys.path.insert(0, {str(REPO / 'functions')!r}); import main"
    )
    module_only, names = best(prefix, runs)
    print(f"import functions_framework: {base * 1000:.0f} ms (best of {runs})")
    print(
        f"+ functions/main.py alone: {(module_only - base) * 1000:.0f} ms; "
        f"stocktrade imported at module load: {any(n.startswith('stocktrade') for n in names)}"
    )
    print(f"{'target':<12} {'bus':<10} {'over ff (ms)':>12} {'budget':>7} {'torch':>6}")
    rows = []
    for target in TARGETS:
        buses = ["pubsub", "inprocess"] if target.startswith(("on_", "cron_")) else ["-"]
        for bus in buses:
            stmt = f"{prefix}; main.preload({target!r}, bus={bus if bus != '-' else 'pubsub'!r})"
            cost, names = best(stmt, runs)
            delta = cost - base
            torch = "torch" in names
            rows.append(
                {"target": target, "bus": bus, "over_ff_s": round(delta, 4), "torch": torch}
            )
            ok = "ok" if delta <= BUDGET_S and not torch else "OVER"
            print(f"{target:<12} {bus:<10} {delta * 1000:>12.0f} {ok:>7} {torch!s:>6}")
    print(json.dumps({"functions_framework_s": round(base, 4), "targets": rows}))


if __name__ == "__main__":
    main()
