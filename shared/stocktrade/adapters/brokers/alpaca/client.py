"""Alpaca Trading API v2 over HTTPS: the REST transport and the :class:`AlpacaBroker`.

* Transport: the standard library (``urllib``), so a function cold start imports no HTTP
  client. Every request carries ``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY``; the keys are
  never logged or put into an error message.
* Errors: a 4xx answer is final and raises :class:`AlpacaApiError` (a
  :class:`~stocktrade.errors.PermanentError`; 404 also a
  :class:`~stocktrade.errors.NotFoundError`) with Alpaca's own message. A 429, a 5xx, a
  timeout or a dropped connection is retried with capped exponential backoff and jitter
  (``Retry-After`` honoured up to the cap), at most ``max_retries`` times; then
  :class:`AlpacaUnavailableError` (a :class:`~stocktrade.errors.TransientError`) is raised so
  the event is redelivered later.
* Idempotent submit: ``POST /v2/orders`` carries our ``client_order_id``. Retrying a POST is
  therefore safe: if an earlier attempt did reach Alpaca, it answers 422 "client_order_id
  must be unique", and :meth:`AlpacaBroker.submit` returns the existing order from
  ``GET /v2/orders:by_client_order_id`` instead of opening a second one.

Alpaca paper trading is commission free; fills carry ``fee=0`` (regulatory fees on sells
appear as account activities, not on the order).
"""

from __future__ import annotations

import http.client
import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote, urlencode

from stocktrade.adapters.brokers.alpaca.config import AlpacaConfig
from stocktrade.adapters.brokers.alpaca.parsing import (
    AlpacaSchemaError,
    is_duplicate_client_order_id,
    loads,
    order_request_body,
    parse_account,
    parse_error_body,
    parse_order,
    parse_positions,
    request_mismatches,
)
from stocktrade.errors import ConflictError, NotFoundError, PermanentError, TransientError
from stocktrade.logging import get_logger

if TYPE_CHECKING:
    from stocktrade.config import Settings
    from stocktrade.domain.broker import BrokerAccount, BrokerOrder, BrokerPosition, OrderRequest

__all__ = [
    "AlpacaApiError",
    "AlpacaBroker",
    "AlpacaNotFoundError",
    "AlpacaRestClient",
    "AlpacaUnavailableError",
    "ClientOrderIdConflictError",
]

log = get_logger(__name__)

_USER_AGENT = "stocktrade-alpaca/1"
# Network failures worth another attempt (urllib wraps most in URLError).
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
)


class AlpacaApiError(PermanentError):
    """Alpaca refused a request (4xx); retrying the same request cannot succeed.

    Attributes:
        status: the HTTP status.
        code: Alpaca's error code (e.g. ``40010001``), if it sent one.
        message: Alpaca's message.
        method: the HTTP method.
        path: the request path.
    """

    def __init__(
        self, status: int, code: int | None, message: str, *, method: str, path: str
    ) -> None:
        code_text = f", code {code}" if code is not None else ""
        super().__init__(f"Alpaca refused {method} {path}: HTTP {status}{code_text}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.method = method
        self.path = path


class AlpacaNotFoundError(AlpacaApiError, NotFoundError):
    """Alpaca has no such order (404)."""


class ClientOrderIdConflictError(ConflictError, PermanentError):
    """The ``client_order_id`` already names a different order at Alpaca.

    Permanent: resubmitting the same request can never succeed (the chain dead-letters it).
    """


class AlpacaUnavailableError(TransientError):
    """Alpaca did not answer usefully (429, 5xx, timeout, network) after every retry.

    Attributes:
        status: the last HTTP status (``None`` for a network failure).
        attempts: how many attempts were made.
    """

    def __init__(self, message: str, *, status: int | None, attempts: int) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts


class _RetryableError(Exception):
    """One failed attempt worth retrying (internal)."""

    def __init__(self, reason: str, status: int | None = None, delay: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.delay = delay


class AlpacaRestClient:
    """JSON over HTTPS to the Trading API, with bounded retries.

    Args:
        config: endpoint, keys, timeout and retry policy.
        sleep: waits between retries (injectable so tests do not wait).
        rand: jitter source in ``[0, 1)``.
    """

    def __init__(
        self,
        config: AlpacaConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self._sleep = sleep
        self._rand = rand
        handlers: list[urllib.request.BaseHandler] = []
        if config.is_loopback:
            # A local peer is reached directly, whatever proxy the environment names.
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:
        return f"AlpacaRestClient(base_url={self.config.base_url!r})"

    def _headers(self, has_body: bool) -> dict[str, str]:
        headers = {
            "APCA-API-KEY-ID": self.config.api_key_id.get_secret_value(),
            "APCA-API-SECRET-KEY": self.config.api_secret_key.get_secret_value(),
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
        }
        if has_body:
            headers["Content-Type"] = "application/json"
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one request (retrying transient failures) and return the decoded JSON.

        Raises:
            AlpacaApiError: a 4xx answer (:class:`AlpacaNotFoundError` for 404).
            AlpacaUnavailableError: 429/5xx/network failures outlasted the retries.
        """
        url = self.config.base_url + path + (f"?{urlencode(query)}" if query else "")
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        attempts = self.config.max_retries + 1
        last: _RetryableError | None = None
        for attempt in range(1, attempts + 1):
            try:
                return self._attempt(method, path, url, data)
            except _RetryableError as retry:
                last = retry
                if attempt == attempts:
                    break
                delay = self._delay(attempt, retry.delay)
                log.warning(
                    "alpaca request failed; retrying",
                    extra={
                        "method": method,
                        "path": path,
                        "status": retry.status,
                        "reason": retry.reason,
                        "attempt": attempt,
                        "retry_in_s": round(delay, 3),
                    },
                )
                self._sleep(delay)
        assert last is not None
        raise AlpacaUnavailableError(
            f"Alpaca {method} {path} failed after {attempts} attempt(s): {last.reason}",
            status=last.status,
            attempts=attempts,
        )

    def _delay(self, attempt: int, server_hint: float | None) -> float:
        cap = self.config.backoff_max_s
        if server_hint is not None:
            return min(max(server_hint, 0.0), cap)
        base = min(cap, self.config.backoff_initial_s * 2 ** (attempt - 1))
        return base * (0.5 + 0.5 * self._rand())  # jitter: spread concurrent retries

    def _attempt(self, method: str, path: str, url: str, data: bytes | None) -> Any:
        req = urllib.request.Request(
            url, data=data, method=method, headers=self._headers(data is not None)
        )
        started = time.monotonic()
        try:
            with self._opener.open(req, timeout=self.config.timeout_s) as resp:
                status = resp.status
                payload = resp.read()
        except urllib.error.HTTPError as err:
            status = err.code
            try:
                payload = err.read()
            except (OSError, http.client.HTTPException):
                payload = b""
            finally:
                err.close()
            self._raise_for_status(method, path, status, payload, err.headers, err.reason)
        except _NETWORK_ERRORS as err:
            reason = getattr(err, "reason", None) or err
            raise _RetryableError(f"network error: {type(err).__name__}: {reason}") from None
        log.debug(
            "alpaca request",
            extra={
                "method": method,
                "path": path,
                "status": status,
                "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        try:
            return loads(payload) if payload else None
        except ValueError:
            # A truncated or proxied 2xx body: ask again (a repeated POST is idempotent).
            raise _RetryableError(f"HTTP {status} with a body that is not JSON", status) from None

    def _raise_for_status(
        self,
        method: str,
        path: str,
        status: int,
        payload: bytes,
        headers: Any,
        reason: Any,
    ) -> NoReturn:
        error = parse_error_body(payload, str(reason or ""))
        if status in (408, 429) or status >= 500:  # 408: the request timed out
            hint = _retry_after(headers)
            raise _RetryableError(f"HTTP {status}: {error.message}", status, hint)
        cls = AlpacaNotFoundError if status == 404 else AlpacaApiError
        raise cls(status, error.code, error.message, method=method, path=path)


def _retry_after(headers: Any) -> float | None:
    """Seconds from a ``Retry-After`` header given in seconds (dates are ignored)."""
    if headers is None:
        return None
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class AlpacaBroker:
    """Alpaca paper trading as the :class:`~stocktrade.ports.LiveBroker` port.

    Args:
        config: endpoint and keys (see :meth:`from_settings`).
        client: a ready transport (tests inject one with a no-wait ``sleep``).
    """

    def __init__(self, config: AlpacaConfig, *, client: AlpacaRestClient | None = None) -> None:
        self.config = config
        self.client = client or AlpacaRestClient(config)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> AlpacaBroker:
        """The broker for ``settings`` (keys from ``ALPACA_API_KEY_ID`` /
        ``ALPACA_API_SECRET_KEY``); keyword arguments override :class:`AlpacaConfig` fields."""
        return cls(AlpacaConfig.from_settings(settings, **overrides))

    def __repr__(self) -> str:
        return f"AlpacaBroker(base_url={self.config.base_url!r})"

    def submit(self, request: OrderRequest) -> BrokerOrder:
        """Submit a market order; idempotent on its ``client_order_id``.

        Returns:
            The order as Alpaca accepted it (usually ``OPEN``; fills arrive later).

        Raises:
            ClientOrderIdConflictError: the ``client_order_id`` names a different order (a
                :class:`~stocktrade.errors.ConflictError` and a
                :class:`~stocktrade.errors.PermanentError`).
            AlpacaApiError: Alpaca refused the order (e.g. 403 insufficient buying power).
            AlpacaUnavailableError: Alpaca could not be reached after the retries.
        """
        try:
            data = self.client.request("POST", "/v2/orders", body=order_request_body(request))
        except AlpacaApiError as exc:
            if not is_duplicate_client_order_id(exc.status, exc.message):
                raise
            existing = self.get_order_by_client_id(request.client_order_id)
            problems = request_mismatches(request, existing)
            if problems:
                raise ClientOrderIdConflictError(
                    f"client_order_id {request.client_order_id!r} already names a different "
                    f"Alpaca order {existing.broker_order_id}: " + "; ".join(problems)
                ) from exc
            log.info(
                "alpaca order already submitted; using it",
                extra={
                    "client_order_id": request.client_order_id,
                    "broker_order_id": existing.broker_order_id,
                    "venue_status": existing.venue_status,
                },
            )
            return existing
        order = parse_order(data)
        if order.client_order_id != request.client_order_id:
            raise AlpacaSchemaError(
                f"Alpaca answered POST /v2/orders with client_order_id "
                f"{order.client_order_id!r}, expected {request.client_order_id!r}"
            )
        log.info(
            "alpaca order submitted",
            extra={
                "client_order_id": order.client_order_id,
                "broker_order_id": order.broker_order_id,
                "symbol": order.symbol,
                "side": order.side.value,
                "venue_status": order.venue_status,
            },
        )
        return order

    def get_order(self, broker_order_id: str) -> BrokerOrder:
        """The order with Alpaca's id ``broker_order_id``.

        Raises:
            AlpacaNotFoundError: no such order.
        """
        return parse_order(
            self.client.request("GET", f"/v2/orders/{quote(broker_order_id, safe='')}")
        )

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder:
        """The order submitted with ``client_order_id``.

        Raises:
            AlpacaNotFoundError: no such order.
        """
        return parse_order(
            self.client.request(
                "GET",
                "/v2/orders:by_client_order_id",
                query={"client_order_id": client_order_id},
            )
        )

    def account(self) -> BrokerAccount:
        """Cash, equity and buying power of the account."""
        return parse_account(self.client.request("GET", "/v2/account"))

    def positions(self) -> list[BrokerPosition]:
        """Every open position."""
        return parse_positions(self.client.request("GET", "/v2/positions"))
