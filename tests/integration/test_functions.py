"""The functions, served by functions-framework's test client against a real Postgres."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import psycopg
import pytest
from cloudevents.conversion import to_structured
from functions_framework import create_app

from stocktrade.adapters.local.bus import InProcessEventBus
from stocktrade.bootstrap import Container, bootstrap
from stocktrade.config import load_settings
from stocktrade.schemas.events import (
    Bar,
    Fill,
    Order,
    SchedulerTick,
    Signal,
    build_cloudevent,
    pubsub_cloudevent,
)

REPO = Path(__file__).resolve().parents[2]
SOURCE = str(REPO / "functions" / "main.py")
FIXTURES = REPO / "tests" / "fixtures" / "pubsub"
AGENT = uuid.UUID("6f1c2d1e-0000-4000-8000-000000000003")
TS = datetime(2015, 12, 31, tzinfo=UTC)


def a_bar(**changes: Any) -> Bar:
    fields: dict[str, Any] = dict(
        symbol="AAPL",
        timeframe="1d",
        ts=TS,
        open="107.01",
        high="107.03",
        low="104.82",
        close="105.26",
        volume="40912316",
        source="replay",
    )
    return Bar(**{**fields, **changes})


@pytest.fixture
def wired(pg_url: str, db_conn: Any) -> Iterator[Container]:
    container = bootstrap(load_settings(database_url=pg_url), db=db_conn, bus=InProcessEventBus())
    # The chain trades (and accepts bars of) symbols some agent trades or that are stored.
    db_conn.execute(
        "INSERT INTO agents (id, owner, name, kind, strategy, symbols) "
        "VALUES (%s, 'local', 'fn-agent', 'baseline', 'buy_and_hold', '{AAPL}')",
        (AGENT,),
    )
    yield container


def app_for(target: str, container: Container, signature: str = "cloudevent") -> Any:
    app = create_app(target, SOURCE, signature)
    module: ModuleType = sys.modules["main"]  # functions-framework loads the source as "main"
    module.set_container(container)
    return app.test_client()


def post_event(client: Any, event: Any) -> Any:
    headers, body = to_structured(event)
    return client.post("/", headers=headers, data=body)


def count(conn: Any, sql: str) -> int:
    return int(conn.execute(sql).fetchone()[0])


def test_on_bar_stores_a_pubsub_bar_once_however_often_it_is_delivered(
    wired: Container, db_conn: Any
) -> None:
    client = app_for("on_bar", wired)
    event = pubsub_cloudevent(a_bar(), message_id="101")
    assert post_event(client, event).status_code == 200
    assert post_event(client, event).status_code == 200  # redelivery
    assert post_event(client, pubsub_cloudevent(a_bar(), message_id="102")).status_code == 200
    assert count(db_conn, "SELECT count(*) FROM bars") == 1
    assert count(db_conn, "SELECT count(*) FROM processed_events WHERE handler = 'on_bar'") == 1


def test_on_bar_accepts_a_raw_push_request_as_the_emulator_sends_it(
    wired: Container, db_conn: Any
) -> None:
    client = app_for("on_bar", wired)
    body = (FIXTURES / "emulator_push_bar.json").read_text()
    response = client.post(
        "/projects/local-project/topics/market-bars",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200
    row = db_conn.execute("SELECT symbol, close, source FROM bars").fetchone()
    assert (row[0], str(row[1]), row[2]) == ("AAPL", "105.26000000", "replay")


def test_on_bar_acknowledges_an_undecodable_message_into_the_dead_letters(
    wired: Container, db_conn: Any
) -> None:
    client = app_for("on_bar", wired)
    body = (FIXTURES / "emulator_push_not_json.json").read_text()
    response = client.post("/", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200  # acknowledged: retrying cannot help
    row = db_conn.execute("SELECT handler, event_id, reason FROM dead_letters").fetchone()
    assert row[:2] == ("on_bar", "msg:2") and "not JSON" in row[2]
    assert count(db_conn, "SELECT count(*) FROM bars") == 0


def test_on_bar_answers_500_on_a_transient_failure_so_pubsub_retries(pg_url: str) -> None:
    broken = psycopg.connect(pg_url, autocommit=True)
    broken.close()
    container = bootstrap(load_settings(database_url=pg_url), db=broken, bus=InProcessEventBus())
    client = app_for("on_bar", container)
    assert post_event(client, pubsub_cloudevent(a_bar())).status_code == 500


@pytest.mark.parametrize(
    "target,event",
    [
        ("on_signal", Signal(agent_id=AGENT, symbol="AAPL", bar_ts=TS, action="sell")),
        (
            "on_order",
            Order(
                client_order_id="o-9",
                agent_id=AGENT,
                symbol="AAPL",
                side="sell",
                qty="5",
                bar_ts=TS,
            ),
        ),
        (
            "on_fill",
            Fill(
                fill_id="f-9",
                client_order_id="o-9",
                agent_id=AGENT,
                symbol="AAPL",
                side="sell",
                qty="5",
                price="105.2",
                fee="0.01",
                ts=TS,
            ),
        ),
    ],
)
def test_each_chain_target_records_its_event_once(
    wired: Container, db_conn: Any, target: str, event: Any
) -> None:
    client = app_for(target, wired)
    assert post_event(client, pubsub_cloudevent(event)).status_code == 200
    assert post_event(client, build_cloudevent(event)).status_code == 200  # direct CloudEvent
    rows = db_conn.execute("SELECT handler, event_id FROM processed_events").fetchall()
    letters = db_conn.execute("SELECT handler, event_id FROM dead_letters").fetchall()
    # A signal of an agent without a paper book decides nothing but is handled; an order or
    # fill the chain never made is refused (the paper broker only executes the chain's own
    # orders) into the dead letters. Either way: once, however often it is delivered.
    assert rows + letters == [(target, event.event_id)]
    assert (letters == []) is (target == "on_signal")


def test_a_target_refuses_another_topics_event_into_the_dead_letters(
    wired: Container, db_conn: Any
) -> None:
    client = app_for("on_order", wired)
    assert post_event(client, pubsub_cloudevent(a_bar())).status_code == 200
    reason = db_conn.execute("SELECT reason FROM dead_letters").fetchone()[0]
    assert "expected event_type 'stocktrade.agent.order'" in reason


def test_cron_relay_publishes_what_the_outbox_still_holds(wired: Container, db_conn: Any) -> None:
    signal = Signal(agent_id=AGENT, symbol="AAPL", bar_ts=TS, action="buy")
    db_conn.execute(
        "INSERT INTO outbox (event_id, topic, ordering_key, payload) VALUES (%s, 'signals', %s, %s)",
        (signal.event_id, str(AGENT), signal.model_dump_json()),
    )
    client = app_for("cron_relay", wired)
    assert post_event(client, pubsub_cloudevent(SchedulerTick(job="relay"))).status_code == 200
    bus = wired.bus()
    assert isinstance(bus, InProcessEventBus) and bus.events("signals") == [signal]
    assert count(db_conn, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


# -- predict -------------------------------------------------------------------------------
def tiny_policy(obs_dim: int = 4) -> bytes:
    """A linear ONNX policy following the obs -> logits, probs contract."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.array([[0.0, 1.0, -1.0]] * obs_dim, dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["obs", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", obs_dim])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3]),
        ],
        [numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture
def promoted(db_conn: Any, tmp_path: Path) -> str:
    data = tiny_policy()
    path = tmp_path / "policy.onnx"
    path.write_bytes(data)
    row = db_conn.execute(
        "INSERT INTO model_versions (agent_name, version, uri_onnx, manifest, sha256, status) "
        "VALUES ('ppo-test', 1, %s, '{}', %s, 'promoted') RETURNING id::text",
        (path.as_uri(), hashlib.sha256(data).hexdigest()),
    ).fetchone()
    return str(row[0])


def test_predict_runs_the_agents_promoted_policy(wired: Container, promoted: str) -> None:
    client = app_for("predict", wired, "http")
    response = client.post("/", json={"obs": [1, 0, 0, 0], "agent": "ppo-test"})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["action"] == "buy" and body["action_id"] == 1
    assert body["model_version"] == promoted
    expected = np.exp([0, 1, -1]) / np.exp([0, 1, -1]).sum()
    assert np.allclose(body["probs"], expected, atol=1e-6)
    assert body["confidence"] == pytest.approx(expected[1], abs=1e-6)
    assert body["backend"] == "onnx-cpu"


def test_predict_takes_state_batches_and_an_explicit_model_version(
    wired: Container, promoted: str
) -> None:
    client = app_for("predict", wired, "http")
    response = client.post(
        "/", json={"state": [[1, 0, 0, 0], [-1, 0, 0, 0]], "model_version": promoted}
    )
    assert response.status_code == 200
    assert response.get_json()["action"] == ["buy", "sell"]


def test_predict_maps_bad_requests_to_clear_4xx(wired: Container, promoted: str) -> None:
    client = app_for("predict", wired, "http")
    cases = [
        ({"obs": [1, 0, 0, 0]}, 400, "model_version' or 'agent"),
        ({"obs": [1, 0], "agent": "ppo-test"}, 400, "4 values per observation"),
        ({"obs": [1, 0, 0, 0], "agent": "nobody"}, 404, "agent 'nobody'"),
        ({"obs": [1, 0, 0, 0], "model_version": "x"}, 400, "must be a UUID"),
        ({"obs": "up", "agent": "ppo-test"}, 400, "invalid request"),
        ({"obs": [1, 0, 0, 0], "agent": "ppo-test", "extra": 1}, 400, "extra"),
    ]
    for body, status, message in cases:
        response = client.post("/", json=body)
        assert response.status_code == status, body
        assert message in response.get_json()["error"], body
    assert client.get("/").status_code == 405


# -- api -----------------------------------------------------------------------------------
def test_api_health_and_readiness(wired: Container, pg_url: str) -> None:
    client = app_for("api", wired, "http")
    assert client.get("/health").get_json() == {"status": "ok"}
    assert client.get("/api/health").status_code == 200
    assert client.get("/ready").get_json() == {"status": "ready"}
    assert client.get("/nope").status_code == 404
    broken = psycopg.connect(pg_url, autocommit=True)
    broken.close()
    client = app_for("api", bootstrap(load_settings(database_url=pg_url), db=broken), "http")
    response = client.get("/ready")
    assert response.status_code == 503 and "database" in response.get_json()["reason"]


def test_importing_the_functions_pulls_in_nothing_heavy() -> None:
    script = (
        "import sys, functions_framework, json\n"
        f"sys.path.insert(0, {str(REPO / 'functions')!r})\n"
        "import main\n"
        "at_import = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('stocktrade', 'torch', 'onnxruntime', 'psycopg', 'numpy'))\n"
        "for t in ('on_bar', 'on_signal', 'on_order', 'on_fill', 'cron_relay', 'api', 'predict'):\n"
        "    main.preload(t)\n"
        "print(json.dumps({'at_import': at_import, 'torch': 'torch' in sys.modules,\n"
        "                  'numba': 'numba' in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # Only the tiny kernel-mode switch loads at import; kernels then run as plain Python.
    assert result == {"at_import": ["stocktrade", "stocktrade.jit"], "torch": False, "numba": False}
