"""Google Cloud Pub/Sub as the :class:`~stocktrade.ports.EventBus`.

* One ``PublisherClient`` per process, created on first publish (never at import: the
  Google client costs ~0.2 s to import and this module is imported lazily by bootstrap).
* Message ordering is on: events with an ordering key (symbol, agent) keep their order. In
  production the client talks to the regional endpoint, which ordering needs.
* :meth:`PubSubEventBus.publish` waits on ``future.result()``, so a function never returns
  before its events are accepted; after a failure on an ordering key it calls
  ``resume_publish`` so that key can publish again, and raises
  :class:`~stocktrade.errors.TransientError`.
* ``PUBSUB_EMULATOR_HOST`` (via settings, or the environment) points both clients at the
  emulator over an insecure channel.

Production delivery is through push subscriptions (Terraform) to the functions;
:meth:`PubSubEventBus.subscribe` opens a streaming-pull subscriber instead, for local tools
and tests.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from stocktrade.errors import ConfigError, PermanentError, TransientError, ValidationError
from stocktrade.logging import get_logger
from stocktrade.schemas.events import (
    Event,
    Topic,
    decode_pubsub_message,
    event_attributes,
    model_for_topic,
)

if TYPE_CHECKING:
    from stocktrade.config import Settings

__all__ = ["PubSubEventBus"]

log = get_logger(__name__)


class PubSubEventBus:
    """Publishes events to Pub/Sub topics ``projects/<project>/topics/<topic>``.

    Args:
        project: the Google Cloud project id (any id works with the emulator).
        emulator_host: ``host:port`` of the Pub/Sub emulator; default ``PUBSUB_EMULATOR_HOST``.
        region: for the regional endpoint (message ordering); ignored with the emulator.
        timeout: seconds to wait for one publish to be accepted.
        max_latency: batching delay; small, because a function waits for every publish.
    """

    def __init__(
        self,
        project: str,
        *,
        emulator_host: str | None = None,
        region: str | None = None,
        timeout: float = 30.0,
        max_latency: float = 0.001,
    ) -> None:
        if not project:
            raise ConfigError("PubSubEventBus needs a project id (GOOGLE_CLOUD_PROJECT)")
        self.project = project
        self.emulator_host = emulator_host or os.environ.get("PUBSUB_EMULATOR_HOST") or None
        self.region = region
        self.timeout = timeout
        self.max_latency = max_latency
        self._publisher: Any = None
        self._subscriber: Any = None
        self._lock = threading.Lock()
        self._streams: list[Any] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> PubSubEventBus:
        """The bus for ``settings`` (project, region, emulator host)."""
        project = settings.gcp_project or (
            "local-project" if settings.pubsub_emulator_host else None
        )
        if project is None:
            raise ConfigError("bus 'pubsub' needs GOOGLE_CLOUD_PROJECT (or PUBSUB_EMULATOR_HOST)")
        return cls(project, emulator_host=settings.pubsub_emulator_host, region=settings.gcp_region)

    # -- clients --------------------------------------------------------------------------
    def _client_kwargs(self, kind: str) -> dict[str, Any]:
        if self.emulator_host:
            import grpc

            if kind == "publisher":
                from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

                return {
                    "transport": PublisherGrpcTransport(
                        channel=grpc.insecure_channel(self.emulator_host)
                    )
                }
            from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

            return {
                "transport": SubscriberGrpcTransport(
                    channel=grpc.insecure_channel(self.emulator_host)
                )
            }
        if self.region:
            return {"client_options": {"api_endpoint": f"{self.region}-pubsub.googleapis.com:443"}}
        return {}

    @property
    def publisher(self) -> Any:
        """The process's ``PublisherClient`` (ordering enabled), created on first use."""
        if self._publisher is None:
            with self._lock:
                if self._publisher is None:
                    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

                    self._publisher = pubsub_v1.PublisherClient(
                        batch_settings=pubsub_v1.types.BatchSettings(max_latency=self.max_latency),
                        publisher_options=pubsub_v1.types.PublisherOptions(
                            enable_message_ordering=True
                        ),
                        **self._client_kwargs("publisher"),
                    )
        return self._publisher

    @property
    def subscriber(self) -> Any:
        """The process's ``SubscriberClient``, created on first use."""
        if self._subscriber is None:
            with self._lock:
                if self._subscriber is None:
                    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

                    self._subscriber = pubsub_v1.SubscriberClient(
                        **self._client_kwargs("subscriber")
                    )
        return self._subscriber

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{_topic(topic)}"

    def subscription_path(self, name: str) -> str:
        return f"projects/{self.project}/subscriptions/{name}"

    # -- publishing -----------------------------------------------------------------------
    def publish(self, topic: str, event: Event, ordering_key: str | None = None) -> str:
        """Publish and wait until Pub/Sub accepted it; returns the message id.

        Raises:
            ValidationError: ``topic`` is not the event's topic.
            TransientError: Pub/Sub did not accept it (the key is resumed for a retry).
        """
        result = self.publish_many([(topic, event, ordering_key)])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def publish_many(
        self, items: Sequence[tuple[str, Event, str | None]]
    ) -> list[str | BaseException]:
        """Publish several events (batched), then wait for all; per item, id or error.

        After a failure, Pub/Sub fails the later messages of that ordering key too (order is
        kept); each failed key is resumed once all futures have settled.
        """
        for topic, event, _ in items:
            if event.TOPIC.value != _topic(topic):
                raise ValidationError(
                    f"a {type(event).__name__} belongs on topic {event.TOPIC.value!r}, "
                    f"not {topic!r}"
                )
        futures: list[tuple[str, str, Any]] = []
        results: list[str | BaseException] = []
        for topic, event, ordering_key in items:
            path = self.topic_path(topic)
            key = event.ordering_key if ordering_key is None else ordering_key
            futures.append(
                (
                    path,
                    key or "",
                    self.publisher.publish(
                        path,
                        event.to_json_bytes(),
                        ordering_key=key or "",
                        **event_attributes(event),
                    ),
                )
            )
        failed: set[tuple[str, str]] = set()
        for path, key, future in futures:
            try:
                results.append(str(future.result(timeout=self.timeout)))
            except Exception as exc:
                results.append(TransientError(f"publish to {path} (key {key!r}) failed: {exc}"))
                if key:
                    failed.add((path, key))
        for path, key in failed:
            self.publisher.resume_publish(path, key)
            log.warning("publish failed; ordering key resumed", extra={"topic": path, "key": key})
        return results

    # -- admin (emulator and local tools; production topics come from Terraform) ----------
    def ensure_topic(self, topic: str) -> str:
        """Create the topic if it does not exist; returns its path."""
        from google.api_core.exceptions import AlreadyExists

        path = self.topic_path(topic)
        with contextlib.suppress(AlreadyExists):
            self.publisher.create_topic(request={"name": path})
        return path

    # -- subscribing (streaming pull) -----------------------------------------------------
    def subscribe(
        self, topic: str, handler: Callable[[Event], None], *, name: str | None = None
    ) -> Any:
        """Pull ``topic`` through subscription ``name`` (created if missing, ordered).

        The handler gets typed events on the client's threads. Returning acks; a
        :class:`PermanentError` (an undecodable message included) is logged and acked; any
        other exception nacks, so Pub/Sub redelivers. Returns the streaming-pull future
        (``.cancel()`` stops it; :meth:`close` stops all).
        """
        from google.api_core.exceptions import AlreadyExists

        model = model_for_topic(topic)
        name = name or f"{_topic(topic)}--{getattr(handler, '__name__', 'handler')}"
        path = self.subscription_path(name)
        with contextlib.suppress(AlreadyExists):
            self.subscriber.create_subscription(
                request={
                    "name": path,
                    "topic": self.ensure_topic(topic),
                    "enable_message_ordering": True,
                    "ack_deadline_seconds": 30,
                }
            )

        def callback(message: Any) -> None:
            try:
                received = decode_pubsub_message(
                    {
                        "data": _b64(message.data),
                        "attributes": dict(message.attributes),
                        "messageId": message.message_id,
                        "orderingKey": message.ordering_key,
                    },
                    model,
                    subscription=path,
                )
                handler(received.event)
            except PermanentError as exc:
                log.warning(
                    "dropping a message that can never be handled",
                    extra={"subscription": path, "error": str(exc)},
                )
                message.ack()
            except Exception as exc:
                log.warning(
                    "handler failed; message nacked for redelivery",
                    extra={"subscription": path, "error": f"{type(exc).__name__}: {exc}"},
                )
                message.nack()
            else:
                message.ack()

        future = self.subscriber.subscribe(path, callback=callback)
        self._streams.append(future)
        return future

    def close(self) -> None:
        """Stop subscribers and flush the publisher."""
        for future in self._streams:
            future.cancel()
        self._streams.clear()
        if self._publisher is not None:
            self._publisher.stop()
            self._publisher = None
        if self._subscriber is not None:
            self._subscriber.close()
            self._subscriber = None


def _topic(topic: str) -> str:
    try:
        return Topic(topic).value
    except ValueError:
        raise ValidationError(
            f"unknown topic {topic!r}; expected one of {[t.value for t in Topic]}"
        ) from None


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()
