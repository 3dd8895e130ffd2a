"""The MQTT bridge notifier: notifications as QoS 1 JSON on a topic of the centre's choosing.

``MqttBridgeNotifier`` publishes the payload plus ``"idempotency_key"`` on a topic with a
persistent session (clean session off, a fixed client id). While disconnected, paho keeps the
messages in memory and sends them after reconnecting; they do not survive a restart of this
process (the webhook outbox does).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import paho.mqtt.client as mqtt

from central.notify.request import check_key, encode_body, idempotency_key_for
from central.plans import Notification
from wire.client import Broker, connect, disconnect, make_client

log = logging.getLogger(__name__)


class MqttBridgeNotifier:
    """Publishes notifications as QoS 1 JSON on an MQTT topic (persistent session)."""

    def __init__(self, notifier_id: str, topic: str, broker: Broker, *,
                 client_id: str | None = None):
        if not topic or "+" in topic or "#" in topic:
            raise ValueError(f"notifier {notifier_id}: bad MQTT topic {topic!r}")
        self.notifier_id = notifier_id
        self.topic = topic
        self.broker = broker
        self.client_id = client_id or f"perimeter-notify-{notifier_id}"
        self.published = 0  # acknowledged by the broker (PUBACK)
        self.enqueued = 0
        # mids published/queued and not yet PUBACKed; never held while calling into paho
        self._outstanding: set[int] = set()
        self._acked_early: set[int] = set()  # PUBACK seen before publish() returned
        self._mids_lock = threading.Lock()
        self._connected = threading.Event()
        self._started = False
        client = make_client(broker, self.client_id, persistent=True,
                             logger=f"{__name__}.paho")
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
            "notifier": self.notifier_id, "broker": self.broker.address,
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
        connect(self.client, self.broker)
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
            disconnect(self.client)
            self._started = False
        return left == 0
