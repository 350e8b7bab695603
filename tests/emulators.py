"""Test harness for the faithful local stack: the Pub/Sub emulator and functions-framework servers.

Used by the session fixture ``pubsub_emulator`` (tests/integration/conftest.py)::

    def test_x(pubsub_emulator, pg_url):
        project = pubsub_emulator.new_project()            # isolates topics per test
        with FunctionServer.start("on_bar", env=pubsub_emulator.function_env(project, pg_url)) as fn:
            pubsub_emulator.create_push_subscription(project, "market-bars", fn.push_endpoint(
                project, "market-bars"))
            PubSubEventBus(project, emulator_host=pubsub_emulator.host).publish(...)

Everything started here runs in its own process group and is killed as a group on stop, so
the emulator's Java child never outlives the test session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FUNCTIONS_SOURCE = REPO / "functions" / "main.py"


def free_port() -> int:
    """A localhost TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[Any] | None = None) -> bool:
    """Poll until something accepts connections on ``port`` (``False`` on timeout or exit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        time.sleep(0.1)
    return False


def _stop_group(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def gcloud_problem() -> str | None:
    """Why the Pub/Sub emulator cannot run here, or ``None`` if it can."""
    if shutil.which("gcloud") is None:
        return "the Google Cloud CLI (gcloud) is not installed"
    try:
        out = subprocess.run(["gcloud", "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`gcloud --version` failed: {exc}"
    if out.returncode != 0:
        return f"`gcloud --version` exited {out.returncode}: {out.stderr.strip()[:200]}"
    if "pubsub-emulator" not in out.stdout:
        return "the gcloud pubsub-emulator component is not installed"
    if shutil.which("java") is None:
        return "java (needed by the Pub/Sub emulator) is not installed"
    return None


class PubSubEmulator:
    """A running ``gcloud beta emulators pubsub`` on a free localhost port."""

    def __init__(self, process: subprocess.Popen[Any], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self.log_path = log_path
        self._publisher: Any = None
        self._subscriber: Any = None

    @classmethod
    def start(cls, timeout: float = 40.0) -> PubSubEmulator:
        """Start the emulator; raises ``RuntimeError`` with the reason if it does not come up."""
        problem = gcloud_problem()
        if problem:
            raise RuntimeError(problem)
        port = free_port()
        log_path = Path(tempfile.mkstemp(prefix="pubsub-emulator-", suffix=".log")[1])
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    "gcloud",
                    "beta",
                    "emulators",
                    "pubsub",
                    "start",
                    f"--host-port=127.0.0.1:{port}",
                    "--quiet",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        emulator = cls(process, port, log_path)
        if not wait_for_port(port, timeout, process):
            emulator.stop()
            tail = log_path.read_text(errors="replace")[-500:]
            raise RuntimeError(f"the Pub/Sub emulator did not come up in {timeout:.0f} s: {tail}")
        return emulator

    def stop(self) -> None:
        for client in (self._publisher, self._subscriber):
            with contextlib.suppress(Exception):
                client.transport.close() if hasattr(client, "transport") else None
        _stop_group(self.process)

    # -- admin ----------------------------------------------------------------------------
    @staticmethod
    def new_project() -> str:
        """A fresh project id: topics and subscriptions of one test never meet another's."""
        return f"test-{uuid.uuid4().hex[:12]}"

    @property
    def publisher(self) -> Any:
        if self._publisher is None:
            import grpc
            from google.cloud import pubsub_v1
            from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

            self._publisher = pubsub_v1.PublisherClient(
                transport=PublisherGrpcTransport(channel=grpc.insecure_channel(self.host))
            )
        return self._publisher

    @property
    def subscriber(self) -> Any:
        if self._subscriber is None:
            import grpc
            from google.cloud import pubsub_v1
            from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

            self._subscriber = pubsub_v1.SubscriberClient(
                transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(self.host))
            )
        return self._subscriber

    def create_topic(self, project: str, topic: str) -> str:
        from google.api_core.exceptions import AlreadyExists

        path = f"projects/{project}/topics/{topic}"
        with contextlib.suppress(AlreadyExists):
            self.publisher.create_topic(request={"name": path})
        return path

    def create_push_subscription(
        self,
        project: str,
        topic: str,
        endpoint: str,
        *,
        name: str | None = None,
        ordered: bool = True,
        min_backoff_s: int = 1,
    ) -> str:
        """A push subscription from ``topic`` (created if needed) to ``endpoint``."""
        path = f"projects/{project}/subscriptions/{name or topic + '-push'}"
        self.subscriber.create_subscription(
            request={
                "name": path,
                "topic": self.create_topic(project, topic),
                "push_config": {"push_endpoint": endpoint},
                "ack_deadline_seconds": 10,
                "enable_message_ordering": ordered,
                "retry_policy": {
                    "minimum_backoff": {"seconds": min_backoff_s},
                    "maximum_backoff": {"seconds": max(min_backoff_s, 2)},
                },
            }
        )
        return path

    def create_pull_subscription(self, project: str, topic: str, name: str) -> str:
        path = f"projects/{project}/subscriptions/{name}"
        self.subscriber.create_subscription(
            request={
                "name": path,
                "topic": self.create_topic(project, topic),
                "enable_message_ordering": True,
                "ack_deadline_seconds": 10,
            }
        )
        return path

    def pull(self, subscription: str, *, want: int, timeout: float = 10.0) -> list[Any]:
        """Pull (and ack) until ``want`` messages arrived or ``timeout`` passed."""
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(got) < want and time.monotonic() < deadline:
            response = self.subscriber.pull(
                request={"subscription": subscription, "max_messages": want - len(got)},
                timeout=max(0.5, deadline - time.monotonic()),
            )
            if response.received_messages:
                got.extend(m.message for m in response.received_messages)
                self.subscriber.acknowledge(
                    request={
                        "subscription": subscription,
                        "ack_ids": [m.ack_id for m in response.received_messages],
                    }
                )
        return got

    def function_env(self, project: str, database_url: str, **extra: str) -> dict[str, str]:
        """Environment for a function server of this stack (pubsub bus, the test database)."""
        return {
            "PUBSUB_EMULATOR_HOST": self.host,
            "GOOGLE_CLOUD_PROJECT": project,
            "STOCKTRADE_BUS": "pubsub",
            "DATABASE_URL": database_url,
            "STOCKTRADE_ENV": "test",
            **extra,
        }


class FunctionServer:
    """A ``functions-framework`` process serving one target on a free localhost port."""

    def __init__(
        self, process: subprocess.Popen[Any], port: int, target: str, log_path: Path
    ) -> None:
        self.process = process
        self.port = port
        self.target = target
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        target: str,
        *,
        env: Mapping[str, str],
        source: Path = FUNCTIONS_SOURCE,
        signature: str = "cloudevent",
        timeout: float = 30.0,
    ) -> Iterator[FunctionServer]:
        """Serve ``target`` from ``source`` until the block ends."""
        port = free_port()
        log_path = Path(tempfile.mkstemp(prefix=f"ff-{target}-", suffix=".log")[1])
        base = {k: v for k, v in os.environ.items() if not k.startswith("STOCKTRADE_")}
        command = [
            str(Path(sys.executable).with_name("functions-framework")),
            "--target",
            target,
            "--signature-type",
            signature,
            "--source",
            str(source),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
        ]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                env={**base, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=str(REPO),
            )
        server = cls(process, port, target, log_path)
        try:
            if not wait_for_port(port, timeout, process):
                raise RuntimeError(
                    f"functions-framework {target} did not start: "
                    f"{log_path.read_text(errors='replace')[-1500:]}"
                )
            yield server
        finally:
            _stop_group(process)

    def push_endpoint(self, project: str, topic: str) -> str:
        """The URL a push subscription posts to (the topic in the path, as Eventarc does)."""
        return f"{self.url}/projects/{project}/topics/{topic}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
