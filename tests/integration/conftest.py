"""Integration fixtures: the Pub/Sub emulator, started once per session (see tests/emulators.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.emulators import PubSubEmulator


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[PubSubEmulator]:
    """A running Pub/Sub emulator; skips with the reason when gcloud or Java is missing or it
    does not come up within 40 s. Use ``pubsub_emulator.new_project()`` per test to isolate."""
    try:
        emulator = PubSubEmulator.start(timeout=40)
    except RuntimeError as exc:
        pytest.skip(f"Pub/Sub emulator unavailable: {exc}")
    try:
        yield emulator
    finally:
        emulator.stop()
