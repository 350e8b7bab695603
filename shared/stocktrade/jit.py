"""Numba where it pays, plain Python where a cold start matters.

Every numeric kernel of stocktrade (features, the trading kernels, metrics, the RL env) is
written once as numba-compatible Python and decorated with :func:`njit` from this module.
By default that is ``numba.njit``: backtests, training and benchmarks run compiled code.

A Cloud Function handles one bar at a time, where importing numba (~0.2 s) and compiling
the kernels (~1 s) would dominate its cold start. It calls :func:`use_pure_python` before
importing any kernel module; the decorator then returns the functions unchanged, so the
exact same source runs as ordinary Python and numba is never imported. Results are the same
operations in the same order (IEEE float64; no fastmath anywhere), so the chain and the
backtest agree; transcendental functions (log, exp, sqrt) may differ in the last ulp between
CPython's libm and LLVM's, well inside the documented tolerances.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_pure = False
_decorated = 0


def use_pure_python() -> None:
    """Run kernels decorated from now on as plain Python (call before importing them).

    Raises:
        RuntimeError: kernels were already compiled-decorated in this process, so switching
            now would mix the two modes.
    """
    global _pure
    if _decorated and not _pure:
        raise RuntimeError(
            "use_pure_python() must run before any stocktrade kernel module is imported"
        )
    _pure = True


def prefer_pure_python() -> bool:
    """Switch to pure Python if no kernel was decorated yet; return whether kernels are pure.

    For entry points that may share a process with compiled code (tests, a notebook):
    there the compiled mode stays, which gives the same results, only a slower start.
    """
    if not _decorated:
        use_pure_python()
    return _pure


def is_pure_python() -> bool:
    """Whether kernels run uncompiled in this process."""
    return _pure


def njit(*args: Any, **options: Any) -> Any:
    """``numba.njit`` with the same call forms, or the identity in pure-Python mode.

    In pure-Python mode the returned function gets a ``py_func`` attribute pointing at
    itself, like a numba dispatcher, so callers may use either form.
    """
    if len(args) == 1 and callable(args[0]) and not options:
        return _decorate(args[0], {})

    def decorator(func: F) -> F:
        return _decorate(func, options)  # type: ignore[no-any-return]

    return decorator


def _decorate(func: Callable[..., Any], options: dict[str, Any]) -> Any:
    global _decorated
    _decorated += 1
    if _pure:
        func.py_func = func  # type: ignore[attr-defined]
        return func
    import numba

    return numba.njit(**options)(func)
