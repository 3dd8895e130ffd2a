"""Governance-centre notifiers: a signed webhook behind a durable Redis outbox, and an MQTT bridge.

The modules of the notifiers:

* ``central.webhook_request``: the request body, idempotency keys and the HMAC signature
  (what the receiving centre checks), and one signed POST;
* ``central.outbox_stream``: the webhook's durable outbox in a Redis stream;
* ``central.webhook``: ``WebhookNotifier``, the sender with its retry and backoff rules;
* ``central.notify`` (this module): the ``Notifier`` protocol, the MQTT bridge and
  ``build_notifiers``; the names the rest of the system uses are importable from here.

MQTT bridge
-----------
``MqttBridgeNotifier`` publishes the payload plus ``"idempotency_key"`` as QoS 1 JSON on a
topic with a persistent session (clean_session=False, a fixed client id). While disconnected,
paho keeps the messages in memory and sends them after reconnecting; they do not survive a
restart of this process (the webhook outbox does).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

import paho.mqtt.client as mqtt
import redis
from paho.mqtt.enums import CallbackAPIVersion

from central.config import NotifierConfig
from central.outbox_stream import GROUP
from central.plans import Notification
from central.webhook import WebhookNotifier
from central.webhook_request import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    check_key,
    encode_body,
    idempotency_key_for,
    sign,
    verify_signature,
)

__all__ = [  # what the rest of the system imports from here
    "GROUP", "IDEMPOTENCY_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "MqttBridgeNotifier",
    "Notifier", "WebhookNotifier", "build_notifiers", "encode_body", "idempotency_key_for",
    "sign", "verify_signature",
]

log = logging.getLogger(__name__)


class Notifier(Protocol):
    """What the central needs of a notifier: take a notification, run and stop its sender."""

    notifier_id: str

    def enqueue(self, payload: Mapping[str, Any], idempotency_key: str) -> str: ...

    def start(self) -> None: ...

    def stop(self, timeout: float | None = None) -> bool: ...



# -- MQTT bridge -------------------------------------------------------------------------------


class MqttBridgeNotifier:
    """Publishes notifications as QoS 1 JSON on an MQTT topic (persistent session)."""

    def __init__(self, notifier_id: str, topic: str, host: str, port: int, *,
                 username: str | None = None, password: str | None = None,
                 client_id: str | None = None, keepalive: int = 30):
        if not topic or "+" in topic or "#" in topic:
            raise ValueError(f"notifier {notifier_id}: bad MQTT topic {topic!r}")
        self.notifier_id = notifier_id
        self.topic = topic
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.client_id = client_id or f"perimeter-notify-{notifier_id}"
        self.published = 0  # acknowledged by the broker (PUBACK)
        self.enqueued = 0
        # mids published/queued and not yet PUBACKed; never held while calling into paho
        self._outstanding: set[int] = set()
        self._acked_early: set[int] = set()  # PUBACK seen before publish() returned
        self._mids_lock = threading.Lock()
        self._connected = threading.Event()
        self._started = False
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             clean_session=False, protocol=mqtt.MQTTv311)
        if username is not None:
            client.username_pw_set(username, password)
        client.max_queued_messages_set(0)  # unbounded in-memory queue while disconnected
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self.client = client

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.error("notify MQTT connect refused",
                      extra={"notifier": self.notifier_id, "reason": str(reason)})
            return
        self._connected.set()
        log.info("notify MQTT connected", extra={
            "notifier": self.notifier_id, "host": self.host, "port": self.port,
            "session_present": bool(flags.session_present)})

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason: Any, properties: Any) -> None:
        self._connected.clear()
        log.warning("notify MQTT disconnected",
                    extra={"notifier": self.notifier_id, "reason": str(reason)})

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        with self._mids_lock:
            if mid in self._outstanding:
                self._outstanding.discard(mid)
                self.published += 1
            else:
                self._acked_early.add(mid)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Connect in the background (retrying while the broker is unreachable)."""
        if self._started:
            return
        self.client.connect_async(self.host, self.port, keepalive=self.keepalive)
        self.client.loop_start()
        self._started = True

    def enqueue(self, payload: Mapping[str, Any], idempotency_key: str) -> str:
        """Publish (or queue while disconnected) ``payload`` + ``idempotency_key``; the mid."""
        check_key(idempotency_key)
        body = encode_body({**payload, "idempotency_key": idempotency_key})
        info = self.client.publish(self.topic, body, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise RuntimeError(f"notifier {self.notifier_id}: MQTT publish failed: "
                               f"{mqtt.error_string(info.rc)}")
        with self._mids_lock:
            if info.mid in self._acked_early:
                self._acked_early.discard(info.mid)
                self.published += 1
            else:
                self._outstanding.add(info.mid)
        self.enqueued += 1
        log.debug("notification published", extra={
            "notifier": self.notifier_id, "key": idempotency_key, "mid": info.mid,
            "queued": info.rc == mqtt.MQTT_ERR_NO_CONN})
        return str(info.mid)

    def send(self, notification: Notification) -> str:
        return self.enqueue(notification.payload, idempotency_key_for(notification))

    def unacknowledged(self) -> int:
        """Messages published or queued but not yet acknowledged by the broker."""
        with self._mids_lock:
            return len(self._outstanding)

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Wait up to ``timeout`` for queued messages to be acknowledged, then disconnect.

        True if nothing was left unacknowledged (what is left is lost with this process).
        """
        deadline = time.monotonic() + (timeout or 0.0)
        while self.unacknowledged() and time.monotonic() < deadline:
            time.sleep(0.02)  # poll interval
        left = self.unacknowledged()
        if left:
            log.warning("notify MQTT stopping with unacknowledged messages",
                        extra={"notifier": self.notifier_id, "count": left})
        if self._started:
            self.client.disconnect()
            self.client.loop_stop()
            self._started = False
        return left == 0


# -- from config -------------------------------------------------------------------------------


def build_notifiers(configs: list[NotifierConfig], redis_client: redis.Redis, ns: str,
                    mqtt_host: str, mqtt_port: int, *, environ: Mapping[str, str] | None = None,
                    consumer: str = "central-1") -> dict[str, WebhookNotifier | MqttBridgeNotifier]:
    """One notifier per config (not started); webhook secrets come from ``secret_env``.

    Raises ValueError for a missing url/topic/secret_env, an unset or empty secret variable
    (naming it), or a repeated id.
    """
    env = os.environ if environ is None else environ
    out: dict[str, WebhookNotifier | MqttBridgeNotifier] = {}
    for cfg in configs:
        if cfg.id in out:
            raise ValueError(f"notifier {cfg.id!r} is configured twice")
        if cfg.kind == "webhook":
            if not cfg.url:
                raise ValueError(f"notifier {cfg.id}: a webhook needs 'url'")
            if not cfg.secret_env:
                raise ValueError(f"notifier {cfg.id}: a webhook needs 'secret_env' (the name "
                                 "of the environment variable holding its HMAC secret)")
            secret = env.get(cfg.secret_env)
            if not secret:
                raise ValueError(f"notifier {cfg.id}: environment variable {cfg.secret_env} "
                                 "(its secret_env) is not set or empty")
            out[cfg.id] = WebhookNotifier(cfg.id, cfg.url, secret.encode("utf-8"), redis_client,
                                          ns=ns, consumer=consumer)
        elif cfg.kind == "mqtt":
            if not cfg.topic:
                raise ValueError(f"notifier {cfg.id}: an mqtt notifier needs 'topic'")
            out[cfg.id] = MqttBridgeNotifier(cfg.id, cfg.topic, mqtt_host, mqtt_port,
                                              client_id=f"perimeter-notify-{cfg.id}-{consumer}")
        else:  # pragma: no cover - the config pattern admits only the two kinds
            raise ValueError(f"notifier {cfg.id}: unknown kind {cfg.kind!r}")
    return out
