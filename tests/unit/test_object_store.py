"""The local object store: round trips, safe keys, atomic writes, and the URL factory."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from stocktrade.adapters.gcp.gcs import GcsObjectStore, parse_gs_url
from stocktrade.adapters.local.object_store import LocalObjectStore, check_key
from stocktrade.adapters.object_store import open_object_store
from stocktrade.errors import ConfigError, NotFoundError, ValidationError

UNSAFE_KEYS = [
    "../escape.txt",
    "runs/../../etc/passwd",
    "runs/./x",
    "/etc/passwd",
    "runs\\x\\report.html",
    "",
    "runs//x",
    "runs/x/",
    "C:/windows/x",
    "runs/\x00/x",
    "runs/.stocktrade-tmp-abc",
]


def test_bytes_written_are_read_back_and_listed(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    uri = store.put_bytes("runs/r1/metrics.json", b'{"a": 1}', "application/json")
    store.put_bytes("runs/r1/report.html", b"<html></html>")
    store.put_bytes("runs/r2/equity.csv", b"ts,equity\n")
    assert store.get_bytes("runs/r1/metrics.json") == b'{"a": 1}'
    assert uri == (tmp_path / "objects" / "runs" / "r1" / "metrics.json").resolve().as_uri()
    assert store.exists("runs/r1/report.html")
    assert not store.exists("runs/r1/missing.csv")
    assert store.list("runs/r1/") == ["runs/r1/metrics.json", "runs/r1/report.html"]
    assert store.list("runs/r") == [
        "runs/r1/metrics.json",
        "runs/r1/report.html",
        "runs/r2/equity.csv",
    ]
    assert store.list() == store.list("runs/")
    assert store.list("nothing/here/") == []


def test_rewriting_a_key_replaces_it_whole(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put_bytes("a/b.txt", b"first version, longer")
    store.put_bytes("a/b.txt", b"second")
    assert store.get_bytes("a/b.txt") == b"second"


def test_missing_object_is_not_found(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    with pytest.raises(NotFoundError, match="no object at file://"):
        store.get_bytes("runs/none/report.html")


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_are_rejected_before_touching_the_disk(tmp_path: Path, key: str) -> None:
    root = tmp_path / "root"
    store = LocalObjectStore(root)
    with pytest.raises(ValidationError, match="unsafe object key"):
        store.put_bytes(key, b"x")
    with pytest.raises(ValidationError):
        store.get_bytes(key)
    assert not root.exists() or not any(root.rglob("*"))
    assert not (tmp_path / "escape.txt").exists()


def test_safe_keys_with_dots_in_names_are_accepted() -> None:
    assert check_key("runs/1/config.yaml") == "runs/1/config.yaml"
    assert check_key("a..b/c.d..e") == "a..b/c.d..e"
    assert check_key("runs/", allow_prefix=True) == "runs/"


def test_a_failed_write_leaves_the_old_object_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalObjectStore(tmp_path)
    store.put_bytes("runs/1/metrics.json", b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.put_bytes("runs/1/metrics.json", b"new")
    monkeypatch.undo()
    assert store.get_bytes("runs/1/metrics.json") == b"old"
    assert sorted(p.name for p in (tmp_path / "runs" / "1").iterdir()) == ["metrics.json"]


def test_concurrent_writers_never_expose_a_partial_object(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    payloads = [bytes([65 + i]) * 200_000 for i in range(4)]
    store.put_bytes("hot/key.bin", payloads[0])
    seen: set[bytes] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            data = store.get_bytes("hot/key.bin")
            seen.add(data[:1] + bytes([len(set(data))]) + len(data).to_bytes(4, "big"))

    thread = threading.Thread(target=reader)
    thread.start()
    for _ in range(10):
        for p in payloads:
            store.put_bytes("hot/key.bin", p)
    stop.set()
    thread.join()
    # Every read saw one whole payload: one distinct byte value, full length.
    assert all(s[1] == 1 and int.from_bytes(s[2:], "big") == 200_000 for s in seen)
    assert store.list("hot/") == ["hot/key.bin"]


def test_factory_opens_a_local_store_for_file_urls(tmp_path: Path) -> None:
    store = open_object_store(tmp_path.as_uri())
    assert isinstance(store, LocalObjectStore)
    assert store.root == tmp_path.resolve()


def test_factory_opens_gcs_for_gs_urls_without_touching_the_network() -> None:
    store = open_object_store("gs://my-bucket/env/dev", emulator_host="localhost:1")
    assert isinstance(store, GcsObjectStore)
    assert (store.bucket_name, store.prefix) == ("my-bucket", "env/dev/")
    assert store.uri("runs/1/report.html") == "gs://my-bucket/env/dev/runs/1/report.html"
    with pytest.raises(ValidationError):
        store.uri("../x")


def test_factory_rejects_other_schemes() -> None:
    with pytest.raises(ConfigError, match="file:// or gs://"):
        open_object_store("s3://bucket/x")
    with pytest.raises(ConfigError):
        parse_gs_url("gs:///no-bucket")
    with pytest.raises(ConfigError):
        open_object_store("file://relative/path")


def test_gcs_module_import_loads_no_google_client() -> None:
    import subprocess
    import sys

    # (The bare ``google``/``google.cloud`` namespace packages come from .pth files at start-up.)
    code = (
        "import sys, stocktrade.adapters.gcp.gcs, stocktrade.adapters.gcp.run_jobs, "
        "stocktrade.adapters.object_store; print(sorted(m for m in sys.modules if "
        "m.startswith(('google.cloud.', 'google.api_core', 'google.auth', 'grpc'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
