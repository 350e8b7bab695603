"""GcsObjectStore against a real GCS API: the gcp-storage-emulator package, in-process."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from stocktrade.adapters.gcp.gcs import GcsObjectStore
from stocktrade.adapters.object_store import open_object_store
from stocktrade.errors import NotFoundError, ValidationError

pytestmark = pytest.mark.integration

BUCKET = "stocktrade-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    """``host:port`` of an in-memory GCS emulator with one bucket (skips if it cannot start)."""
    try:
        from gcp_storage_emulator.server import create_server
    except ImportError as exc:
        pytest.skip(f"gcp-storage-emulator is not installed: {exc}")
    pytest.importorskip("google.cloud.storage", reason="google-cloud-storage is not installed")
    port = free_port()
    try:
        server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
        server.start()
    except Exception as exc:  # port race, sandbox without sockets: say why and skip
        pytest.skip(f"cannot start the GCS emulator on port {port}: {exc}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def store(emulator: str, request: pytest.FixtureRequest) -> GcsObjectStore:
    # A fresh prefix per test keeps tests independent on the shared emulator.
    prefix = f"env/{request.node.name[:40]}"
    return GcsObjectStore(BUCKET, prefix, project="test", emulator_host=emulator)


def test_objects_round_trip_through_the_emulator(store: GcsObjectStore) -> None:
    uri = store.put_bytes("runs/r1/metrics.json", b'{"sharpe": 1.2}', "application/json")
    assert uri == f"gs://{BUCKET}/{store.prefix}runs/r1/metrics.json"
    assert store.get_bytes("runs/r1/metrics.json") == b'{"sharpe": 1.2}'
    assert store.exists("runs/r1/metrics.json") and not store.exists("runs/r1/nope.csv")
    store.put_bytes("runs/r1/metrics.json", b"{}")
    assert store.get_bytes("runs/r1/metrics.json") == b"{}"
    payload = bytes(range(256)) * 4096  # 1 MiB of every byte value
    store.put_bytes("runs/r1/blob.bin", payload)
    assert store.get_bytes("runs/r1/blob.bin") == payload


def test_listing_is_by_prefix_and_relative_to_the_store(store: GcsObjectStore) -> None:
    for key in ("runs/a/report.html", "runs/a/equity.csv", "runs/ab/x.csv", "models/m.onnx"):
        store.put_bytes(key, b"x")
    assert store.list("runs/a/") == ["runs/a/equity.csv", "runs/a/report.html"]
    assert store.list("runs/a") == ["runs/a/equity.csv", "runs/a/report.html", "runs/ab/x.csv"]
    assert len(store.list()) == 4


def test_missing_objects_and_unsafe_keys_are_clear_errors(store: GcsObjectStore) -> None:
    with pytest.raises(NotFoundError, match=f"gs://{BUCKET}/"):
        store.get_bytes("runs/none/report.html")
    with pytest.raises(ValidationError, match="unsafe object key"):
        store.put_bytes("../outside", b"x")
    assert store.delete("runs/none/report.html") is False
    store.put_bytes("runs/tmp/x", b"1")
    assert store.delete("runs/tmp/x") is True and not store.exists("runs/tmp/x")


def test_the_factory_honours_the_emulator_host(emulator: str) -> None:
    store = open_object_store(f"gs://{BUCKET}/factory", emulator_host=emulator)
    store.put_bytes("k.txt", b"hello")
    assert store.get_bytes("k.txt") == b"hello"
    assert store.list("") == ["k.txt"]


def test_settings_storage_emulator_host_is_used(
    emulator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stocktrade.config import load_settings

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
    settings = load_settings(object_store_url=f"gs://{BUCKET}/from-settings")
    store = open_object_store(settings=settings)
    assert isinstance(store, GcsObjectStore) and store.emulator_host == emulator
    store.put_bytes("a.txt", b"via settings")
    assert store.get_bytes("a.txt") == b"via settings"


def test_the_backtest_job_writes_its_artifacts_and_log_to_gcs(
    emulator: str, db_conn: object, pg_url: str, tmp_path: Path
) -> None:
    import os

    from stocktrade.adapters.local.launcher import SubprocessJobLauncher
    from stocktrade.adapters.postgres.bars import PostgresBarRepository
    from stocktrade.adapters.postgres.runs import PostgresRunRepository
    from stocktrade.domain.runs import RunStatus
    from stocktrade.services.backtest_runs import submit_backtest
    from tests.integration.test_backtest_job import ARTIFACTS, REQUEST, write_subset_csv

    csv = write_subset_csv(tmp_path)
    bars = PostgresBarRepository(db_conn)  # type: ignore[arg-type]
    bars.import_csv(csv.read_bytes(), str(csv), source="stocknet")
    runs = PostgresRunRepository(db_conn)  # type: ignore[arg-type]
    url = f"gs://{BUCKET}/job-{os.getpid()}"
    store = open_object_store(url, emulator_host=emulator)
    launcher = SubprocessJobLauncher(
        store,
        env={
            "DATABASE_URL": pg_url,
            "STOCKTRADE_OBJECT_STORE_URL": url,
            "STORAGE_EMULATOR_HOST": emulator,
            "STOCKTRADE_ENV": "test",
        },
    )
    run = submit_backtest(REQUEST, runs=runs, bars=bars, store=store, launcher=launcher)
    assert run.execution is not None
    assert launcher.wait(run.execution, timeout=120) == 0
    done = runs.get(run.id)
    assert done.status is RunStatus.SUCCEEDED
    assert {k.rsplit("/", 1)[1] for k in store.list(f"runs/{run.id}/")} == ARTIFACTS
    assert all(u.startswith(f"{url}/runs/{run.id}/") for u in done.artifacts.values())
    # Not a local store: the job uploaded its own log (--write-job-log, as on Cloud Run).
    assert b"succeeded: total return" in store.get_bytes(f"runs/{run.id}/job.log")
