"""The one place settings are read: environment variables and an optional ``.env`` file.

Every setting has a safe embedded default so ``make demo`` needs no accounts: an embedded
Postgres under the user's data directory, the in-process bus and a local object-store
folder. Production (``STOCKTRADE_ENV=prod``) refuses to start on development defaults.

Environment variables use the ``STOCKTRADE_`` prefix (``STOCKTRADE_BUS=pubsub``); a few
well-known names are accepted as they are (``DATABASE_URL``, ``GOOGLE_CLOUD_PROJECT``,
``POLYGON_API_KEY``, ``ALPACA_API_KEY_ID``, ``ALPACA_API_SECRET_KEY``,
``FIREBASE_AUTH_EMULATOR_HOST``, ``PUBSUB_EMULATOR_HOST``). An unknown ``STOCKTRADE_*``
variable is an error, not a silent typo.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from stocktrade.errors import ConfigError

ENV_PREFIX = "STOCKTRADE_"


def _default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("stocktrade", appauthor=False))


class Settings(BaseSettings):
    """Validated, frozen settings for every deployable.

    Attributes:
        env: ``dev`` (laptop), ``test`` (CI) or ``prod`` (Google Cloud).
        database_url: any Postgres URL; unset means the embedded server under ``data_dir``.
        data_dir: where the embedded Postgres and local artifacts live.
        object_store_url: ``file:///path`` or ``gs://bucket/prefix``; unset means
            ``<data_dir>/objects``.
        bus: ``inprocess`` (synchronous, deterministic) or ``pubsub``.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
    )

    env: Literal["dev", "test", "prod"] = "dev"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("STOCKTRADE_DATABASE_URL", "DATABASE_URL")
    )
    data_dir: Path = Field(default_factory=_default_data_dir)
    db_pool_max: int = Field(default=5, ge=1, le=50)
    embedded_db_name: str = Field(default="stocktrade", pattern=r"^[a-z_][a-z0-9_]{0,62}$")

    object_store_url: str | None = None
    bus: Literal["inprocess", "pubsub"] = "inprocess"
    mirror: Literal["off", "memory", "firestore"] = "off"
    job_launcher: Literal["subprocess", "cloudrun"] = "subprocess"

    gcp_project: str | None = Field(
        default=None, validation_alias=AliasChoices("STOCKTRADE_GCP_PROJECT", "GOOGLE_CLOUD_PROJECT")
    )
    gcp_region: str = "us-central1"
    pubsub_emulator_host: str | None = Field(
        default=None, validation_alias=AliasChoices("PUBSUB_EMULATOR_HOST")
    )
    firebase_auth_emulator_host: str | None = Field(
        default=None, validation_alias=AliasChoices("FIREBASE_AUTH_EMULATOR_HOST")
    )
    polygon_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("STOCKTRADE_POLYGON_API_KEY", "POLYGON_API_KEY")
    )
    alpaca_api_key_id: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("STOCKTRADE_ALPACA_API_KEY_ID", "ALPACA_API_KEY_ID")
    )
    alpaca_api_secret_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("STOCKTRADE_ALPACA_API_SECRET_KEY", "ALPACA_API_SECRET_KEY"),
    )
    torch_threads: int = Field(default=2, ge=1, le=64)

    # The GCS emulator (gcp-storage-emulator); like the other emulator hosts, refused in prod.
    firestore_emulator_host: str | None = Field(
        default=None, validation_alias=AliasChoices("FIRESTORE_EMULATOR_HOST")
    )
    storage_emulator_host: str | None = Field(
        default=None, validation_alias=AliasChoices("STORAGE_EMULATOR_HOST")
    )
    # Jobs: the run a job execution works on (set by the launcher), and the task context
    # Cloud Run gives every task (the local launcher sets the same variables).
    run_id: str | None = None
    cloud_run_job: str | None = Field(default=None, validation_alias=AliasChoices("CLOUD_RUN_JOB"))
    cloud_run_execution: str | None = Field(
        default=None, validation_alias=AliasChoices("CLOUD_RUN_EXECUTION")
    )
    cloud_run_task_index: int = Field(
        default=0, ge=0, validation_alias=AliasChoices("CLOUD_RUN_TASK_INDEX")
    )
    cloud_run_task_count: int = Field(
        default=1, ge=1, validation_alias=AliasChoices("CLOUD_RUN_TASK_COUNT")
    )
    cloud_run_task_attempt: int = Field(
        default=0, ge=0, validation_alias=AliasChoices("CLOUD_RUN_TASK_ATTEMPT")
    )

    @field_validator("object_store_url")
    @classmethod
    def _object_store_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("file://", "gs://")):
            raise ValueError(f"object_store_url must start with file:// or gs://, got {value!r}")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"database_url must be a postgresql:// URL, got {value[:16]!r}...")
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.env != "prod":
            return self
        problems = []
        if self.database_url is None:
            problems.append("DATABASE_URL is unset (the embedded Postgres is for laptops only)")
        if self.bus != "pubsub":
            problems.append("STOCKTRADE_BUS must be 'pubsub' in production")
        if self.object_store_url is None or not self.object_store_url.startswith("gs://"):
            problems.append("STOCKTRADE_OBJECT_STORE_URL must be a gs:// URL in production")
        if self.firebase_auth_emulator_host:
            problems.append("FIREBASE_AUTH_EMULATOR_HOST is set (it disables token signature checks)")
        if self.pubsub_emulator_host:
            problems.append("PUBSUB_EMULATOR_HOST is set in production")
        if self.firestore_emulator_host:
            problems.append("FIRESTORE_EMULATOR_HOST is set in production")
        if self.storage_emulator_host:
            problems.append("STORAGE_EMULATOR_HOST is set in production")
        if problems:
            raise ValueError("unsafe production settings: " + "; ".join(problems))
        return self

    @property
    def resolved_object_store_url(self) -> str:
        """The object-store URL, defaulting to a folder under ``data_dir``."""
        return self.object_store_url or (self.data_dir / "objects").resolve().as_uri()

    def redacted(self) -> dict[str, Any]:
        """Settings as a dict safe to log: secrets and passwords are masked."""
        data = self.model_dump(mode="json")
        for key, value in list(data.items()):
            if isinstance(getattr(self, key), SecretStr) and value is not None:
                data[key] = "**********"
        if self.database_url and "@" in self.database_url:
            scheme, rest = self.database_url.split("://", 1)
            creds, host = rest.rsplit("@", 1)
            data["database_url"] = f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
        return data


def _unknown_prefixed_env() -> list[str]:
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    return sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment (plus explicit overrides), or raise ConfigError."""
    unknown = _unknown_prefixed_env()
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)}; expected one of "
            f"{', '.join(sorted(ENV_PREFIX + n.upper() for n in Settings.model_fields))}"
        )
    try:
        return Settings(**overrides)
    except Exception as exc:  # pydantic.ValidationError: re-raise in our own tree
        raise ConfigError(f"invalid settings: {exc}") from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, validated once at start."""
    return load_settings()
