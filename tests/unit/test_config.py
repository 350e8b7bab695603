from pathlib import Path

import pytest

from stocktrade.config import load_settings
from stocktrade.errors import ConfigError


def test_defaults_are_the_embedded_stack(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.database_url is None
    assert settings.bus == "inprocess"
    assert settings.resolved_object_store_url == (tmp_path / "objects").resolve().as_uri()


def test_unknown_prefixed_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKTRADE_BUSS", "pubsub")
    with pytest.raises(ConfigError, match="STOCKTRADE_BUSS"):
        load_settings()


def test_bad_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKTRADE_BUS", "kafka")
    with pytest.raises(ConfigError, match="bus"):
        load_settings()


def test_production_refuses_development_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKTRADE_ENV", "prod")
    with pytest.raises(ConfigError, match="DATABASE_URL is unset"):
        load_settings()


def test_production_refuses_the_auth_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKTRADE_ENV", "prod")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db/stocktrade")
    monkeypatch.setenv("STOCKTRADE_BUS", "pubsub")
    monkeypatch.setenv("STOCKTRADE_OBJECT_STORE_URL", "gs://bucket/prefix")
    monkeypatch.setenv("FIREBASE_AUTH_EMULATOR_HOST", "localhost:9099")
    with pytest.raises(ConfigError, match="FIREBASE_AUTH_EMULATOR_HOST"):
        load_settings()
    monkeypatch.delenv("FIREBASE_AUTH_EMULATOR_HOST")
    assert load_settings().env == "prod"


def test_redacted_settings_hide_passwords_and_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://user:hunter2@db:5432/x")
    monkeypatch.setenv("POLYGON_API_KEY", "secret-key")
    shown = load_settings().redacted()
    assert "hunter2" not in str(shown)
    assert "secret-key" not in str(shown)
