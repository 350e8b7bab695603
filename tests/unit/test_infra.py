"""Offline checks of the deployment files (terraform validate needs provider downloads)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TOPICS = {"market-bars", "signals", "orders", "fills", "news", "model-promoted", "scheduler-ticks"}


def load_tf() -> dict[str, list]:
    hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 is not installed")
    merged: dict[str, list] = {}
    for path in sorted((REPO / "infra").glob("*.tf")):
        with open(path) as handle:
            for key, value in hcl2.load(handle).items():
                merged.setdefault(key, []).extend(value)
    return merged


def _clean(value: object) -> object:
    """python-hcl2 8 keeps the quotes of keys and strings; drop them."""
    if isinstance(value, dict):
        return {str(k).strip('"'): _clean(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def resources(tf: dict[str, list], kind: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for block in _clean(tf.get("resource", [])):  # type: ignore[union-attr]
        for name, body in block.get(kind, {}).items():
            out[name] = body
    return out


def test_every_topic_of_the_design_is_declared() -> None:
    tf = load_tf()
    text = (REPO / "infra" / "main.tf").read_text()
    declared = set(re.findall(r'"([a-z-]+)"\s*=\s*\{\s*ordering', text))
    assert declared >= TOPICS
    assert "topics" in resources(tf, "google_pubsub_topic")


def test_bucket_is_private_and_uniform() -> None:
    bucket = resources(load_tf(), "google_storage_bucket")["artifacts"]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"


def test_no_workload_gets_a_primitive_role() -> None:
    text = "\n".join(p.read_text() for p in (REPO / "infra").glob("*.tf"))
    assert not re.search(r'roles/(owner|editor|viewer)"', text)


def test_cloud_sql_is_postgres_with_private_ip() -> None:
    sql = resources(load_tf(), "google_sql_database_instance")["main"]
    assert sql["database_version"].startswith("POSTGRES_")
    settings = sql["settings"][0]
    assert settings["ip_configuration"][0]["ipv4_enabled"] is False


def test_terraform_files_are_formatted() -> None:
    if shutil.which("terraform") is None:
        pytest.skip("terraform binary not on PATH")
    result = subprocess.run(["terraform", "fmt", "-check", "-recursive", str(REPO / "infra")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_firebase_rewrites_send_api_to_the_api_function() -> None:
    rewrites = json.loads((REPO / "firebase.json").read_text())["hosting"]["rewrites"]
    api = [r for r in rewrites if r["source"] == "/api/**"]
    assert api and api[0]["function"]["functionId"] == "api"


def test_cloudbuild_user_substitutions_start_with_underscore() -> None:
    build = yaml.safe_load((REPO / "cloudbuild.yaml").read_text())
    assert all(key.startswith("_") for key in build["substitutions"])
    ids = [step["id"] for step in build["steps"]]
    assert ids.index("push-jobs") < ids.index("deploy-jobs")
