"""Alpaca Trading API v2 (paper trading) behind the :class:`~stocktrade.ports.LiveBroker` port.

Same files as every venue adapter: ``config`` (endpoint, keys, retry policy), ``client``
(the HTTPS transport and :class:`AlpacaBroker`), ``parsing`` (JSON <-> domain values).
Recorded-style responses live under ``tests/fixtures/alpaca/``.

Usage::

    broker = AlpacaBroker.from_settings(get_settings())
    order = broker.submit(OrderRequest("cid-1", "AAPL", Side.BUY, qty=Decimal(10)))
    later = broker.get_order_by_client_id("cid-1")
    fill = later.fill_since(order.filled_qty, order.filled_avg_price)  # None until it fills
"""

from stocktrade.adapters.brokers.alpaca.client import (
    AlpacaApiError,
    AlpacaBroker,
    AlpacaNotFoundError,
    AlpacaRestClient,
    AlpacaUnavailableError,
    ClientOrderIdConflictError,
)
from stocktrade.adapters.brokers.alpaca.config import LIVE_BASE_URL, PAPER_BASE_URL, AlpacaConfig
from stocktrade.adapters.brokers.alpaca.parsing import AlpacaSchemaError

__all__ = [
    "LIVE_BASE_URL",
    "PAPER_BASE_URL",
    "AlpacaApiError",
    "AlpacaBroker",
    "AlpacaConfig",
    "AlpacaNotFoundError",
    "AlpacaRestClient",
    "AlpacaSchemaError",
    "AlpacaUnavailableError",
    "ClientOrderIdConflictError",
]
