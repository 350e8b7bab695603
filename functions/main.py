"""Cloud Functions (gen2) entry points, served by functions-framework.

Thin on purpose: each target turns its request or CloudEvent into a call of one service and
answers. Nothing is created at import time (this module imports only functions-framework and the
tiny stocktrade.jit switch);
the container (settings, database connection, bus, caches) is built on the first call and
kept for the life of the instance.

Targets:
    on_bar, on_signal, on_order, on_fill: Pub/Sub CloudEvents (topics market-bars, signals,
        orders, fills) -> :mod:`stocktrade.services.chain` through the delivery service
        (idempotent, outbox, dead letters). An exception is HTTP 500, which Pub/Sub retries.
    on_model_promoted: ``model-promoted`` -> policy agents following it switch versions.
    cron_relay: scheduler tick -> publish what the outbox still holds.
    predict: HTTP POST ``{"obs" | "state": [...], "model_version" | "agent": ...}`` ->
        ``{"action", "confidence", "probs", "model_version", ...}`` (ONNX Runtime, CPU).
    api: HTTP; ``/health`` (the process is up) and ``/ready`` (the database answers).

Run one locally: ``functions-framework --target on_bar --signature-type cloudevent
--source functions/main.py --port 8081``.
"""

from __future__ import annotations

import threading
from typing import Any

import functions_framework

# Kernels run as plain Python in a function instance: no numba import, no JIT compile on a
# cold start (see stocktrade.jit). Must happen before any kernel module is imported.
from stocktrade.jit import prefer_pure_python

prefer_pure_python()

__all__ = [
    "api",
    "container",
    "cron_relay",
    "on_bar",
    "on_fill",
    "on_model_promoted",
    "on_order",
    "on_signal",
    "predict",
    "preload",
    "set_container",
]

_lock = threading.Lock()
_container: Any = None


def container() -> Any:
    """This instance's :class:`stocktrade.bootstrap.Container`, built on first use."""
    global _container
    if _container is None:
        with _lock:
            if _container is None:
                from stocktrade.bootstrap import bootstrap
                from stocktrade.logging import configure_logging

                built = bootstrap()
                configure_logging(built.settings.log_level)
                _container = built
    return _container


def set_container(value: Any) -> None:
    """Use ``value`` as this instance's container (tests, embedding); ``None`` resets."""
    global _container
    _container = value


def _deliver(name: str, cloud_event: Any) -> None:
    from stocktrade.services.chain import HANDLERS

    handler = HANDLERS[name]
    container().delivery().receive(handler.name, cloud_event, handler.model, handler.effect)


@functions_framework.cloud_event
def on_bar(cloud_event: Any) -> None:
    """A bar from ``market-bars``."""
    _deliver("on_bar", cloud_event)


@functions_framework.cloud_event
def on_signal(cloud_event: Any) -> None:
    """A signal from ``signals``."""
    _deliver("on_signal", cloud_event)


@functions_framework.cloud_event
def on_order(cloud_event: Any) -> None:
    """An order from ``orders``."""
    _deliver("on_order", cloud_event)


@functions_framework.cloud_event
def on_fill(cloud_event: Any) -> None:
    """A fill from ``fills``."""
    _deliver("on_fill", cloud_event)


@functions_framework.cloud_event
def on_model_promoted(cloud_event: Any) -> None:
    """A promoted policy version from ``model-promoted``."""
    _deliver("on_model_promoted", cloud_event)


@functions_framework.cloud_event
def cron_relay(cloud_event: Any) -> None:
    """A ``scheduler-ticks`` tick: publish outbox rows a crash or outage left behind."""
    container().delivery().relay_all()


@functions_framework.http
def predict(request: Any) -> Any:
    """Run a stored policy on an observation (the CPU fallback of the GPU service)."""
    from pydantic import ValidationError as PydanticValidationError

    from stocktrade.errors import NotFoundError, TransientError, ValidationError
    from stocktrade.services.predict import PredictRequest

    if request.method != "POST":
        return {"error": f"use POST, not {request.method}"}, 405
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return {"error": "expected a JSON object body"}, 400
    try:
        return container().predictor().predict(PredictRequest.model_validate(body)), 200
    except PydanticValidationError as exc:
        errors = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5]]
        return {"error": "invalid request: " + "; ".join(errors)}, 400
    except ValidationError as exc:
        return {"error": str(exc)}, 400
    except NotFoundError as exc:
        return {"error": str(exc)}, 404
    except TransientError as exc:
        return {"error": str(exc)}, 503


@functions_framework.http
def api(request: Any) -> Any:
    """The HTTP API (Firebase Hosting rewrites ``/api/**`` here)."""
    path = request.path.rstrip("/") or "/"
    if path.startswith("/api/") or path == "/api":
        path = path[4:] or "/"
    if path == "/health":
        return {"status": "ok"}, 200
    if path == "/ready":
        try:
            container().db().execute("SELECT 1")
        except Exception as exc:  # not ready, for whatever reason: say which
            return {
                "status": "unavailable",
                "reason": f"database: {type(exc).__name__}: {exc}",
            }, 503
        return {"status": "ready"}, 200
    return {"error": f"no route {request.method} {request.path}"}, 404


def preload(target: str, *, bus: str = "pubsub") -> None:
    """Import what ``target``'s first call imports, without connecting (cold-start bench)."""
    import importlib

    modules = {
        "api": ["stocktrade.bootstrap", "stocktrade.adapters.postgres.db", "psycopg"],
        "predict": [
            "stocktrade.bootstrap",
            "stocktrade.services.predict",
            "stocktrade.adapters.postgres.policies",
            "stocktrade.adapters.inference.onnx_runtime",
            "onnxruntime",
            "psycopg",
        ],
    }.get(
        target,
        [
            "stocktrade.bootstrap",
            "stocktrade.services.chain",
            "stocktrade.services.delivery",
            "stocktrade.adapters.postgres.delivery",
            "stocktrade.adapters.postgres.db",
            "psycopg",
        ],
    )
    if target.startswith(("on_", "cron_")):
        modules += (
            ["stocktrade.adapters.gcp.pubsub", "google.cloud.pubsub_v1"]
            if bus == "pubsub"
            else ["stocktrade.adapters.local.bus"]
        )
    for name in modules:
        importlib.import_module(name)
