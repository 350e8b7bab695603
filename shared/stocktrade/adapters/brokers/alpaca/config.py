"""Settings of the Alpaca Trading API v2 adapter: endpoint, keys, timeouts, retries.

Strict and frozen like every config here: unknown fields are errors, keys are
:class:`~pydantic.SecretStr` (masked in ``repr`` and logs). The default endpoint is paper
trading; the live endpoint is refused unless ``allow_live=True`` is set on purpose.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)
from pydantic import ValidationError as PydanticValidationError

from stocktrade.errors import ConfigError

if TYPE_CHECKING:
    from stocktrade.config import Settings

__all__ = ["LIVE_BASE_URL", "PAPER_BASE_URL", "AlpacaConfig", "is_loopback_host"]

PAPER_BASE_URL = "https://paper-api.alpaca.markets"
LIVE_BASE_URL = "https://api.alpaca.markets"
_LIVE_HOST = "api.alpaca.markets"


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost`` and loopback addresses (local test peers)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AlpacaConfig(BaseModel):
    """Connection settings for :class:`~stocktrade.adapters.brokers.alpaca.AlpacaBroker`.

    Attributes:
        base_url: Trading API root, without ``/v2`` (paper trading by default). ``http://``
            is accepted only for a loopback host (a local test peer).
        api_key_id: sent as ``APCA-API-KEY-ID``.
        api_secret_key: sent as ``APCA-API-SECRET-KEY``.
        timeout_s: per-request connect and read timeout.
        max_retries: retries after the first attempt for 429, 5xx and network errors.
        backoff_initial_s: first retry delay; doubles each retry (with jitter).
        backoff_max_s: cap of one retry delay (also caps a server's ``Retry-After``).
        allow_live: permit the live-money endpoint.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Declared first so the base_url check can see it (a model-level validator would echo
    # the whole input, keys included, in its error message).
    allow_live: bool = False
    base_url: str = PAPER_BASE_URL
    api_key_id: SecretStr
    api_secret_key: SecretStr
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    max_retries: int = Field(default=3, ge=0, le=10)
    backoff_initial_s: float = Field(default=0.5, ge=0, le=30)
    backoff_max_s: float = Field(default=8.0, ge=0, le=120)

    @field_validator("base_url")
    @classmethod
    def _valid_base_url(cls, value: str, info: ValidationInfo) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"base_url must be an http(s) URL with a host, got {value!r}")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ValueError(
                f"base_url must use https (http only for a loopback test peer), got {value!r}"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"base_url must not carry a query or fragment, got {value!r}")
        if parts.hostname == _LIVE_HOST and not info.data.get("allow_live", False):
            raise ValueError(
                f"base_url {value!r} trades real money; expected the paper endpoint "
                f"{PAPER_BASE_URL!r} (set allow_live=True to trade live on purpose)"
            )
        return value.rstrip("/")

    @field_validator("api_key_id", "api_secret_key")
    @classmethod
    def _non_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("Alpaca API keys must not be empty")
        return value

    @property
    def is_loopback(self) -> bool:
        """True when the endpoint is a local peer (tests); such requests bypass proxies."""
        return is_loopback_host(urlsplit(self.base_url).hostname)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> AlpacaConfig:
        """Config with the keys from ``settings`` (``ALPACA_API_KEY_ID`` /
        ``ALPACA_API_SECRET_KEY``) and any field overridden by keyword.

        Raises:
            ConfigError: a key is missing or a value is invalid.
        """
        values: dict[str, Any] = {
            "api_key_id": settings.alpaca_api_key_id,
            "api_secret_key": settings.alpaca_api_secret_key,
            **overrides,
        }
        missing = [
            env
            for key, env in (
                ("api_key_id", "ALPACA_API_KEY_ID"),
                ("api_secret_key", "ALPACA_API_SECRET_KEY"),
            )
            if values.get(key) is None
        ]
        if missing:
            raise ConfigError(f"the Alpaca broker needs {' and '.join(missing)}; found them unset")
        try:
            return cls(**values)
        except PydanticValidationError as exc:
            # Field names and messages only: the inputs may hold the keys.
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}"
                for e in exc.errors(include_url=False, include_input=False)
            )
            raise ConfigError(f"invalid Alpaca config: {problems}") from None
