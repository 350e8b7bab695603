"""The Alpaca broker adapter against a faithful local peer of the Trading API v2.

The peer (an ``http.server`` on 127.0.0.1) keeps orders the way Alpaca does: unique
``client_order_id`` (422 on reuse), lookup by id and by client order id, 404 for unknown
orders; it answers with the recorded-style responses in ``tests/fixtures/alpaca/``, checks
every request's keys and body, and can inject failures (503, 429, slow or lost answers).
A guard on ``socket`` refuses any connection that is not to a loopback address, so no test
can reach the real API.
"""

from __future__ import annotations

import copy
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from pydantic import SecretStr

from stocktrade.adapters.brokers.alpaca import (
    PAPER_BASE_URL,
    AlpacaApiError,
    AlpacaBroker,
    AlpacaConfig,
    AlpacaNotFoundError,
    AlpacaRestClient,
    AlpacaSchemaError,
    AlpacaUnavailableError,
)
from stocktrade.adapters.brokers.alpaca.config import is_loopback_host
from stocktrade.adapters.brokers.alpaca.parsing import loads, parse_order
from stocktrade.config import Settings
from stocktrade.domain.broker import BrokerOrderStatus, OrderRequest
from stocktrade.domain.orders import Order, Side
from stocktrade.errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    PermanentError,
    TransientError,
    ValidationError,
)
from stocktrade.logging import JsonFormatter
from stocktrade.ports import LiveBroker

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alpaca"
KEY_ID = "PKTESTKEYID0123456789"
SECRET = "test-secret-0f9e8d7c6b5a-never-log-me"
CID = "st-agent7-AAPL-20240102T1430"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


# -- the local peer -------------------------------------------------------------------------
@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class Fault:
    method: str
    path: str
    response: dict[str, Any]
    times: int = 1
    apply: bool = False  # process the request, then answer with the fault (a lost answer)
    delay: float = 0.0  # seconds to wait before answering (a slow answer)


@dataclass
class AlpacaPeer:
    """A stateful stand-in for ``paper-api.alpaca.markets`` on a loopback port."""

    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_client: dict[str, str] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def fault(self, method: str, path: str, name: str, **kw: Any) -> None:
        self.faults.append(Fault(method, path, fixture(name), **kw))

    def fault_raw(self, method: str, path: str, status: int, body: Any, **kw: Any) -> None:
        self.faults.append(Fault(method, path, {"status": status, "body": body}, **kw))

    def advance(self, client_order_id: str, name: str) -> None:
        """Move an order to the fill state recorded in fixture ``name``."""
        recorded = fixture(name)["body"]
        with self.lock:
            order = self.orders[self.by_client[client_order_id]]
            for key in ("filled_qty", "filled_avg_price", "status", "updated_at", "filled_at"):
                order[key] = recorded[key]

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]

    # -- request handling -----------------------------------------------------------------
    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes
    ) -> tuple[int, dict[str, str], Any, float]:
        parts = urlsplit(raw_path)
        path, query = parts.path, parse_qs(parts.query)
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = raw_body.decode(errors="replace")
        with self.lock:
            self.requests.append(Recorded(method, path, query, headers, body))
            fault = next(
                (f for f in self.faults if f.method == method and f.path == path and f.times > 0),
                None,
            )
            if fault is not None:
                fault.times -= 1
        if headers.get("apca-api-key-id") != KEY_ID or headers.get("apca-api-secret-key") != SECRET:
            self.violations.append(f"{method} {path}: wrong or missing APCA keys")
            return self._answer(fixture("error_unauthorized"))
        if headers.get("accept") != "application/json":
            self.violations.append(f"{method} {path}: Accept is {headers.get('accept')!r}")
        if fault is not None and not fault.apply:
            return self._answer(fault.response, fault.delay)
        result = self._route(method, path, query, headers, body)
        if fault is not None:
            return self._answer(fault.response, fault.delay)
        return result

    def _answer(
        self, response: dict[str, Any], delay: float = 0.0
    ) -> tuple[int, dict[str, str], Any, float]:
        return response["status"], response.get("headers", {}), response["body"], delay

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: Any,
    ) -> tuple[int, dict[str, str], Any, float]:
        if method == "POST" and path == "/v2/orders":
            return self._create(headers, body)
        if method == "GET" and path == "/v2/orders:by_client_order_id":
            cid = (query.get("client_order_id") or [""])[0]
            with self.lock:
                oid = self.by_client.get(cid)
                order = copy.deepcopy(self.orders[oid]) if oid else None
            return self._order_or_404(order, cid)
        if method == "GET" and path.startswith("/v2/orders/"):
            oid = unquote(path.removeprefix("/v2/orders/"))
            with self.lock:
                order = copy.deepcopy(self.orders.get(oid))
            return self._order_or_404(order, oid)
        if method == "GET" and path == "/v2/account":
            return self._answer(fixture("account"))
        if method == "GET" and path == "/v2/positions":
            return self._answer(fixture("positions"))
        self.violations.append(f"unexpected request {method} {path}")
        return 404, {}, {"code": 40410000, "message": "endpoint not found"}, 0.0

    def _order_or_404(
        self, order: dict[str, Any] | None, key: str
    ) -> tuple[int, dict[str, str], Any, float]:
        if order is None:
            missing = fixture("error_order_not_found")
            missing["body"]["message"] = f"order not found for {key}"
            return self._answer(missing)
        return 200, {}, order, 0.0

    def _create(self, headers: dict[str, str], body: Any) -> tuple[int, dict[str, str], Any, float]:
        problems = self._check_order_body(headers, body)
        if problems:
            self.violations.extend(problems)
            return 422, {}, {"code": 40010000, "message": "; ".join(problems)}, 0.0
        with self.lock:
            if body["client_order_id"] in self.by_client:
                return self._answer(fixture("error_duplicate_client_order_id"))
            order = copy.deepcopy(fixture("order_accepted")["body"])
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            order.update(
                id=str(uuid.uuid4()),
                client_order_id=body["client_order_id"],
                symbol=body["symbol"],
                side=body["side"],
                qty=body.get("qty"),
                notional=body.get("notional"),
                created_at=now,
                updated_at=now,
                submitted_at=now,
                position_intent=f"{body['side']}_to_open",
            )
            self.orders[order["id"]] = order
            self.by_client[order["client_order_id"]] = order["id"]
        return 200, {}, copy.deepcopy(order), 0.0

    @staticmethod
    def _check_order_body(headers: dict[str, str], body: Any) -> list[str]:
        if headers.get("content-type") != "application/json":
            return [f"Content-Type is {headers.get('content-type')!r}, expected application/json"]
        if not isinstance(body, dict):
            return [f"body is not a JSON object: {body!r}"]
        problems = []
        required = {"symbol", "side", "type", "time_in_force", "client_order_id"}
        sizing = {"qty", "notional"} & set(body)
        if not required <= set(body) or len(sizing) != 1:
            problems.append(
                f"body fields {sorted(body)}: need {sorted(required)} and one of qty/notional"
            )
        unknown = set(body) - required - {"qty", "notional"}
        if unknown:
            problems.append(f"unexpected body fields {sorted(unknown)}")
        if body.get("type") != "market" or body.get("time_in_force") != "day":
            problems.append(f"type/time_in_force {body.get('type')}/{body.get('time_in_force')}")
        if body.get("side") not in ("buy", "sell"):
            problems.append(f"side {body.get('side')!r}")
        for key in sizing:
            value = body[key]
            if not isinstance(value, str) or Decimal(value) <= 0:
                problems.append(f"{key} must be a positive decimal string, found {value!r}")
        return problems


def _handler(peer: AlpacaPeer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, body, delay = peer.handle(self.command, self.path, headers, raw)
            if delay:
                time.sleep(delay)
            payload = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        do_GET = _serve  # noqa: N815
        do_POST = _serve  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


@pytest.fixture
def peer() -> Iterator[AlpacaPeer]:
    p = AlpacaPeer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(p))
    server.daemon_threads = True
    p.server = server
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield p
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert p.violations == [], p.violations


@pytest.fixture(autouse=True)
def no_alpaca_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys come from the tests only, never from the machine's environment."""
    for name in (
        "ALPACA_API_KEY_ID",
        "ALPACA_API_SECRET_KEY",
        "STOCKTRADE_ALPACA_API_KEY_ID",
        "STOCKTRADE_ALPACA_API_SECRET_KEY",
    ):
        monkeypatch.delenv(name, raising=False)


@dataclass
class NetworkGuard:
    blocked: list[str] = field(default_factory=list)


@pytest.fixture(autouse=True)
def no_external_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetworkGuard]:
    """Refuse (and record) any connection or DNS lookup that is not to a loopback host."""
    guard = NetworkGuard()
    real_connect = socket.create_connection
    real_getaddrinfo = socket.getaddrinfo

    def create_connection(address: Any, *args: Any, **kw: Any) -> socket.socket:
        host = address[0]
        if not is_loopback_host(host):
            guard.blocked.append(f"{host}:{address[1]}")
            raise OSError(f"test network guard: refused a connection to {host}:{address[1]}")
        return real_connect(address, *args, **kw)

    def getaddrinfo(host: Any, *args: Any, **kw: Any) -> Any:
        if not is_loopback_host(host if isinstance(host, str) else None):
            guard.blocked.append(f"dns:{host}")
            raise OSError(f"test network guard: refused a DNS lookup of {host}")
        return real_getaddrinfo(host, *args, **kw)

    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield guard


@dataclass
class Harness:
    broker: AlpacaBroker
    sleeps: list[float]


def make_broker(base_url: str, **overrides: Any) -> Harness:
    config = AlpacaConfig(
        base_url=base_url,
        api_key_id=SecretStr(KEY_ID),
        api_secret_key=SecretStr(SECRET),
        **{"timeout_s": 2.0, "backoff_initial_s": 0.25, **overrides},
    )
    sleeps: list[float] = []
    client = AlpacaRestClient(config, sleep=sleeps.append, rand=lambda: 1.0)
    broker = AlpacaBroker(config, client=client)
    port: LiveBroker = broker  # mypy: the adapter fits the port
    assert port is broker
    return Harness(broker, sleeps)


def buy(cid: str = CID, qty: str = "10", symbol: str = "AAPL") -> OrderRequest:
    return OrderRequest(cid, symbol, Side.BUY, qty=Decimal(qty))


# -- submit -----------------------------------------------------------------------------------
def test_submit_posts_the_documented_body_with_keys_and_returns_the_accepted_order(
    peer: AlpacaPeer,
) -> None:
    h = make_broker(peer.url)

    order = h.broker.submit(buy())

    (sent,) = peer.requests
    assert (sent.method, sent.path) == ("POST", "/v2/orders")
    assert sent.body == {
        "symbol": "AAPL",
        "side": "buy",
        "type": "market",
        "time_in_force": "day",
        "client_order_id": CID,
        "qty": "10",
    }
    assert sent.headers["apca-api-key-id"] == KEY_ID
    assert sent.headers["apca-api-secret-key"] == SECRET
    assert order.client_order_id == CID and order.broker_order_id in peer.orders
    assert order.status is BrokerOrderStatus.OPEN and order.venue_status == "accepted"
    assert order.qty == Decimal(10) and order.filled_qty == 0 and order.filled_avg_price is None
    assert order.created_at.tzinfo is UTC
    assert order.fill_since() is None  # accepted, nothing filled yet


def test_a_notional_order_sends_notional_and_no_qty(peer: AlpacaPeer) -> None:
    h = make_broker(peer.url)

    order = h.broker.submit(
        OrderRequest("cid-notional", "MSFT", Side.BUY, notional=Decimal("500.00"))
    )

    assert peer.requests[0].body["notional"] == "500.00"
    assert "qty" not in peer.requests[0].body
    assert order.notional == Decimal(500) and order.qty is None


def test_a_sized_domain_order_becomes_a_request_but_an_unsized_one_is_refused() -> None:
    ts = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    sized = OrderRequest.from_order(Order(CID, "AAPL", Side.SELL, Decimal(3), ts))
    assert (sized.side, sized.qty, sized.notional) == (Side.SELL, Decimal(3), None)
    with pytest.raises(ValidationError, match="qty > 0"):
        OrderRequest.from_order(Order(CID, "AAPL", Side.BUY, Decimal(0), ts))
    with pytest.raises(ValidationError, match="exactly one of qty and notional"):
        OrderRequest(CID, "AAPL", Side.BUY, qty=Decimal(1), notional=Decimal(5))


def test_resubmitting_a_client_order_id_returns_the_existing_order_and_opens_no_second(
    peer: AlpacaPeer,
) -> None:
    h = make_broker(peer.url)
    first = h.broker.submit(buy())

    again = h.broker.submit(buy())

    assert again.broker_order_id == first.broker_order_id
    assert len(peer.orders) == 1
    assert peer.calls() == [
        ("POST", "/v2/orders"),
        ("POST", "/v2/orders"),
        ("GET", "/v2/orders:by_client_order_id"),
    ]
    assert peer.requests[-1].query == {"client_order_id": [CID]}


def test_a_lost_answer_to_submit_is_retried_and_recovered_through_the_client_order_id(
    peer: AlpacaPeer,
) -> None:
    # Alpaca accepted the order but the answer never arrived (a 504 from the edge).
    peer.fault_raw("POST", "/v2/orders", 504, {"message": "gateway timeout"}, apply=True)
    h = make_broker(peer.url)

    order = h.broker.submit(buy())

    assert len(peer.orders) == 1 and order.broker_order_id in peer.orders
    assert peer.calls() == [
        ("POST", "/v2/orders"),
        ("POST", "/v2/orders"),
        ("GET", "/v2/orders:by_client_order_id"),
    ]
    assert h.sleeps == [0.25]


def test_a_client_order_id_taken_by_a_different_order_is_a_conflict(peer: AlpacaPeer) -> None:
    h = make_broker(peer.url)
    h.broker.submit(buy(qty="10"))

    with pytest.raises(ConflictError, match=r"qty 10 != 7") as info:
        h.broker.submit(buy(qty="7"))
    assert isinstance(info.value, PermanentError)  # redelivery cannot fix it: dead letter
    assert len(peer.orders) == 1


# -- fills ----------------------------------------------------------------------------------
def test_partial_then_full_fills_map_to_two_domain_fills_that_add_up(peer: AlpacaPeer) -> None:
    h = make_broker(peer.url)
    accepted = h.broker.submit(buy())

    peer.advance(CID, "order_partially_filled")
    partial = h.broker.get_order(accepted.broker_order_id)
    first = partial.fill_since(accepted.filled_qty, accepted.filled_avg_price)
    peer.advance(CID, "order_filled")
    done = h.broker.get_order_by_client_id(CID)
    second = done.fill_since(partial.filled_qty, partial.filled_avg_price)

    assert partial.status is BrokerOrderStatus.PARTIALLY_FILLED
    assert done.status is BrokerOrderStatus.FILLED and done.status.terminal
    assert first is not None and second is not None
    assert (first.qty, first.price, first.fee) == (Decimal(4), Decimal("187.4"), Decimal(0))
    assert (second.qty, second.price) == (Decimal(6), Decimal("187.45"))
    assert first.order_id == second.order_id == CID
    assert first.side is Side.BUY and first.symbol == "AAPL"
    assert first.fill_id == f"{accepted.broker_order_id}:4"
    assert second.fill_id == f"{accepted.broker_order_id}:10"
    assert first.ts == datetime(2024, 1, 2, 14, 30, 1, 402117, tzinfo=UTC)  # updated_at
    assert second.ts == datetime(2024, 1, 2, 14, 30, 2, 907219, tzinfo=UTC)  # filled_at
    # Together they cost exactly what Alpaca reports: 10 x 187.43.
    assert first.cash_delta + second.cash_delta == Decimal("-1874.30")


def test_polling_the_same_state_again_yields_no_new_fill_and_a_stable_fill_id(
    peer: AlpacaPeer,
) -> None:
    h = make_broker(peer.url)
    h.broker.submit(buy())
    peer.advance(CID, "order_filled")

    once = h.broker.get_order_by_client_id(CID)
    twice = h.broker.get_order_by_client_id(CID)

    full = once.fill_since()
    assert full is not None and (full.qty, full.price) == (Decimal(10), Decimal("187.43"))
    assert twice.fill_since().fill_id == full.fill_id  # type: ignore[union-attr]
    assert twice.fill_since(once.filled_qty, once.filled_avg_price) is None
    with pytest.raises(ValidationError, match="went back"):
        parse_order(fixture("order_partially_filled")["body"]).fill_since(
            Decimal(10), Decimal("187.43")
        )


def test_a_recorded_fractional_notional_fill_keeps_every_digit() -> None:
    order = parse_order(fixture("order_notional_filled")["body"])

    fill = order.fill_since()

    assert order.notional == Decimal(500) and order.qty is None
    assert fill is not None and fill.qty == Decimal("1.328761244")
    assert fill.price == Decimal("376.29")
    assert order.created_at == datetime(2024, 1, 2, 14, 30, 0, 500000, tzinfo=UTC)


def test_nanosecond_timestamps_are_read_to_the_microsecond() -> None:
    order = parse_order(fixture("order_accepted")["body"])
    assert order.created_at == datetime(2024, 1, 2, 14, 30, 0, 123456, tzinfo=UTC)


# -- account and positions -------------------------------------------------------------------
def test_account_and_positions_are_read_as_decimals_with_short_positions_negative(
    peer: AlpacaPeer,
) -> None:
    h = make_broker(peer.url)

    account = h.broker.account()
    positions = {p.symbol: p for p in h.broker.positions()}

    assert account.cash == Decimal("98125.7") and account.equity == Decimal("100005.9")
    assert account.buying_power == Decimal("196250.6") and not account.trading_blocked
    assert account.status == "ACTIVE" and account.currency == "USD"
    assert positions["AAPL"].qty == Decimal(10)
    assert positions["AAPL"].avg_entry_price == Decimal("187.43")
    assert positions["TSLA"].qty == Decimal(-2)
    assert positions["TSLA"].market_value == Decimal("-495.3")


# -- errors ---------------------------------------------------------------------------------
def test_a_4xx_is_permanent_carries_alpacas_message_and_is_not_retried(peer: AlpacaPeer) -> None:
    peer.fault("POST", "/v2/orders", "error_insufficient_buying_power")
    h = make_broker(peer.url)

    with pytest.raises(AlpacaApiError) as info:
        h.broker.submit(buy())

    assert isinstance(info.value, PermanentError)
    assert not isinstance(info.value, TransientError)
    assert (info.value.status, info.value.code) == (403, 40310000)
    assert "insufficient buying power" in str(info.value)
    assert len(peer.requests) == 1 and h.sleeps == []


def test_an_unknown_order_is_not_found_and_permanent(peer: AlpacaPeer) -> None:
    h = make_broker(peer.url)

    with pytest.raises(AlpacaNotFoundError) as info:
        h.broker.get_order("00000000-0000-0000-0000-000000000000")

    assert isinstance(info.value, NotFoundError) and isinstance(info.value, PermanentError)
    assert "order not found" in info.value.message
    with pytest.raises(AlpacaNotFoundError):
        h.broker.get_order_by_client_id("never-submitted")


def test_a_5xx_is_retried_with_growing_backoff_and_then_succeeds(peer: AlpacaPeer) -> None:
    peer.fault("GET", "/v2/account", "error_service_unavailable", times=2)
    h = make_broker(peer.url)

    account = h.broker.account()

    assert account.cash == Decimal("98125.7")
    assert peer.calls() == [("GET", "/v2/account")] * 3
    assert h.sleeps == [0.25, 0.5]  # doubling (jitter pinned to its top)


def test_a_persistent_5xx_ends_in_a_transient_error_after_bounded_retries(peer: AlpacaPeer) -> None:
    peer.fault("POST", "/v2/orders", "error_service_unavailable", times=100)
    h = make_broker(peer.url, max_retries=3, backoff_max_s=0.6)

    with pytest.raises(AlpacaUnavailableError) as info:
        h.broker.submit(buy())

    assert isinstance(info.value, TransientError)
    assert not isinstance(info.value, PermanentError)
    assert (info.value.status, info.value.attempts) == (503, 4)
    assert "internal server error occurred" in str(info.value)
    assert len(peer.requests) == 4 and peer.orders == {}
    assert h.sleeps == [0.25, 0.5, 0.6]  # capped at backoff_max_s


def test_a_rate_limit_is_transient_and_honours_retry_after(peer: AlpacaPeer) -> None:
    limited = fixture("error_rate_limited")
    limited["headers"] = {"Retry-After": "3"}
    peer.faults.append(Fault("GET", "/v2/positions", limited, times=1))
    h = make_broker(peer.url, backoff_max_s=2.0)

    positions = h.broker.positions()

    assert len(positions) == 2
    assert h.sleeps == [2.0]  # the server's 3 s, capped at backoff_max_s


def test_a_slow_answer_times_out_and_is_retried(peer: AlpacaPeer) -> None:
    peer.fault("GET", "/v2/account", "account", delay=1.0)
    h = make_broker(peer.url, timeout_s=0.2)

    started = time.monotonic()
    account = h.broker.account()

    assert account.equity == Decimal("100005.9")
    assert len(peer.requests) == 2 and len(h.sleeps) == 1
    assert time.monotonic() - started < 1.0  # it did not wait for the slow answer


def test_a_response_that_breaks_the_schema_is_a_permanent_schema_error(peer: AlpacaPeer) -> None:
    peer.fault_raw(
        "GET",
        "/v2/account",
        200,
        {"id": "x", "status": "ACTIVE", "cash": "abc", "equity": "1", "buying_power": "1"},
    )
    h = make_broker(peer.url)

    with pytest.raises(AlpacaSchemaError, match=r"'cash': expected a decimal number, found 'abc'"):
        h.broker.account()


def test_wrong_keys_are_refused_permanently(peer: AlpacaPeer) -> None:
    config = AlpacaConfig(
        base_url=peer.url, api_key_id=SecretStr(KEY_ID), api_secret_key=SecretStr("wrong")
    )
    broker = AlpacaBroker(config)

    with pytest.raises(AlpacaApiError) as info:
        broker.account()

    assert info.value.status == 401 and "not authorized" in info.value.message
    peer.violations.clear()  # the peer flagged the bad keys, as it should


# -- secrets, configuration and the network guard --------------------------------------------
def test_keys_never_reach_logs_errors_or_reprs(
    peer: AlpacaPeer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    peer.fault("GET", "/v2/account", "error_service_unavailable", times=1)
    peer.fault("POST", "/v2/orders", "error_insufficient_buying_power")
    h = make_broker(peer.url)
    h.broker.account()
    with pytest.raises(AlpacaApiError) as info:
        h.broker.submit(buy())

    formatter = JsonFormatter()
    text = "\n".join(formatter.format(r) for r in caplog.records)
    assert "alpaca request failed; retrying" in text  # something was logged
    texts = [
        text,
        str(info.value),
        repr(h.broker),
        repr(h.broker.client),
        repr(h.broker.config),
        str(h.broker.config.model_dump()),
    ]
    assert not [t for t in texts if SECRET in t or KEY_ID in t]
    with pytest.raises(ConfigError) as bad:
        AlpacaConfig.from_settings(_settings(), base_url="http://example.com")
    assert SECRET not in str(bad.value) and "https" in str(bad.value)


def _settings(**kw: Any) -> Settings:
    keys = {"alpaca_api_key_id": SecretStr(KEY_ID), "alpaca_api_secret_key": SecretStr(SECRET)}
    return Settings(_env_file=None, **{**keys, **kw})  # type: ignore[call-arg]


def test_config_defaults_to_paper_trading_and_refuses_live_or_plain_http_by_default() -> None:
    config = AlpacaConfig.from_settings(_settings())
    assert config.base_url == PAPER_BASE_URL == "https://paper-api.alpaca.markets"
    assert config.api_key_id.get_secret_value() == KEY_ID
    with pytest.raises(ConfigError, match="trades real money"):
        AlpacaConfig.from_settings(_settings(), base_url="https://api.alpaca.markets")
    live = AlpacaConfig.from_settings(
        _settings(), base_url="https://api.alpaca.markets", allow_live=True
    )
    assert live.base_url == "https://api.alpaca.markets"
    with pytest.raises(ConfigError, match="ALPACA_API_SECRET_KEY"):
        AlpacaConfig.from_settings(_settings(alpaca_api_secret_key=None))
    with pytest.raises(ConfigError, match="timeout_s"):
        AlpacaConfig.from_settings(_settings(), timeout_s=0)
    with pytest.raises(ConfigError, match=r"unknown_field|Extra inputs"):
        AlpacaConfig.from_settings(_settings(), unknown_field=1)


def test_the_network_guard_stops_the_default_endpoint_before_any_packet_leaves(
    no_external_network: NetworkGuard,
) -> None:
    broker = AlpacaBroker(AlpacaConfig.from_settings(_settings(), max_retries=0))

    with pytest.raises(AlpacaUnavailableError, match="network error"):
        broker.account()

    assert no_external_network.blocked
    assert all("paper-api.alpaca.markets" in b for b in no_external_network.blocked)


def test_responses_parse_with_exact_decimals() -> None:
    assert loads(b'{"x": 0.1}')["x"] == Decimal("0.1")
