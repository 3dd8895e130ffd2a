"""MQTT alarm sink: alarms and edge availability on an MQTT broker (paho-mqtt 2.x, MQTT 3.1.1).

Topic scheme (``prefix`` defaults to ``perimeter/v1``, ``site`` to ``default``):

``{prefix}/{site}/alarm/{camera}/{zone}/{kind}``
    One message per alarm event, QoS 1, not retained. The payload is ``Alarm.to_json()``
    (UTF-8 JSON, schema ``perimeter.alarm/1``); ``kind`` is the ``AlarmKind`` value
    (``intrusion``, ``line_crossing``, ``dwell``, ``crowd_density``). Delivery is at least
    once: consumers deduplicate on the payload's ``event_id``.

``{prefix}/{site}/edge/{edge_id}/status``
    Availability of one edge worker, QoS 1, retained. Payload
    ``{"state": "online" | "offline", "edge_id": "<edge_id>", "time": <epoch seconds>}``.
    ``offline`` is registered as the last will before every (re)connect, so the broker
    publishes it when the connection drops without a DISCONNECT; there ``time`` is when the
    will was registered (the last connect), not when the link died. ``online`` is published
    on every successful (re)connect, and ``close()`` publishes ``offline`` before it
    disconnects cleanly.

Topic segments: ``edge_id`` and ``site`` are one segment each, ``prefix`` one or more
segments joined by ``/``. A segment must be non-empty and free of ``+``, ``#``, ``/`` and NUL
(``prefix`` must also not start with ``$``); otherwise the constructor raises ``ValueError``.
``camera`` and ``zone`` come from configuration at run time, so those characters are
replaced by ``_`` instead (an empty one becomes ``_``); the payload keeps the original ids.

Delivery: the client keeps a persistent session (clean session off, client id
``perimeter-edge-{edge_id}`` unless given) and reconnects by itself. While it is disconnected
paho queues every QoS 1 publish in memory (queue unbounded) and sends it after the reconnect,
so ``emit`` never drops an alarm; ``pending`` counts alarms not yet acknowledged by the broker
(PUBACK) and ``published`` those acknowledged. What is still pending when the process exits
is lost: ``close()`` waits up to ``publish_timeout_s`` and logs a warning with the count.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from zones.alarm import Alarm

log = logging.getLogger(__name__)

KEEPALIVE_S = 30
RECONNECT_MIN_DELAY_S = 1
RECONNECT_MAX_DELAY_S = 30
_FORBIDDEN = ("+", "#", "/", "\x00")


def _check_segment(name: str, value: str) -> str:
    if not value or any(c in value for c in _FORBIDDEN):
        raise ValueError(
            f"{name} {value!r} is not a valid MQTT topic segment: it must be non-empty "
            "and contain none of '+', '#', '/', NUL")
    return value


def _check_prefix(prefix: str) -> str:
    if prefix.startswith("$"):
        raise ValueError(f"prefix {prefix!r} must not start with '$' (reserved by brokers)")
    for part in prefix.split("/"):
        _check_segment("prefix segment", part)
    return prefix


def sanitize_segment(value: str) -> str:
    """A run-time id (camera, zone) made safe as one topic segment."""
    for c in _FORBIDDEN:
        value = value.replace(c, "_")
    return value or "_"


class MqttSink:
    """Publish alarms (QoS 1) and this edge's availability (retained) to an MQTT broker."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, *, edge_id: str,
                 site: str = "default", prefix: str = "perimeter/v1", qos: int = 1,
                 username: str | None = None, password: str | None = None,
                 client_id: str | None = None, connect_timeout_s: float = 10.0,
                 publish_timeout_s: float = 10.0):
        if qos not in (1, 2):
            raise ValueError(f"qos must be 1 or 2 for alarms (at least once), got {qos}")
        self.host = host
        self.port = port
        self.edge_id = _check_segment("edge_id", edge_id)
        self.site = _check_segment("site", site)
        self.prefix = _check_prefix(prefix)
        self.qos = qos
        self.connect_timeout_s = connect_timeout_s
        self.publish_timeout_s = publish_timeout_s
        self.client_id = client_id or f"perimeter-edge-{edge_id}"
        self.status_topic = f"{prefix}/{site}/edge/{edge_id}/status"

        self._lock = threading.Condition()
        self._pending: dict[int, mqtt.MQTTMessageInfo] = {}  # alarm mid -> info, not acked
        self._status_mids: set[int] = set()  # status messages in flight, not counted
        self._acked_unknown: set[int] = set()  # acks that overtook their registration
        self._published = 0
        self._connected = threading.Event()
        self._refused: str | None = None
        self._opened = False

        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False,
            protocol=MQTTProtocolVersion.MQTTv311, reconnect_on_failure=True)
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.max_queued_messages_set(0)  # unbounded: never refuse an alarm
        self._client.max_inflight_messages_set(20)
        self._client.reconnect_delay_set(RECONNECT_MIN_DELAY_S, RECONNECT_MAX_DELAY_S)
        self._client.connect_timeout = connect_timeout_s
        self._client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        self._client.on_pre_connect = self._on_pre_connect
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._set_will()

    # -- topics and payloads -------------------------------------------------------------------

    def alarm_topic(self, alarm: Alarm) -> str:
        return (f"{self.prefix}/{self.site}/alarm/{sanitize_segment(alarm.camera)}/"
                f"{sanitize_segment(alarm.zone)}/{alarm.kind.value}")

    def _status_payload(self, state: str) -> str:
        return json.dumps({"state": state, "edge_id": self.edge_id, "time": time.time()})

    def _set_will(self) -> None:
        self._client.will_set(self.status_topic, self._status_payload("offline"),
                              qos=1, retain=True)

    # -- paho callbacks (network thread) -------------------------------------------------------

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        self._set_will()  # fresh time in the will for this connection

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason: ReasonCode, properties: Properties | None) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            log.error("mqtt connect refused", extra={
                "host": self.host, "port": self.port, "reason": str(reason)})
            return
        log.info("mqtt connected", extra={
            "host": self.host, "port": self.port, "client_id": self.client_id,
            "session_present": flags.session_present, "pending": self.pending})
        self._publish_status("online")
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason: ReasonCode, properties: Properties | None) -> None:
        self._connected.clear()
        if self._opened:
            log.warning("mqtt connection lost, reconnecting", extra={
                "host": self.host, "port": self.port, "reason": str(reason),
                "pending": self.pending})
        else:
            log.info("mqtt disconnected", extra={"host": self.host, "port": self.port})

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Properties | None) -> None:
        # Runs under paho's message lock: never call into paho while holding self._lock.
        with self._lock:
            if self._pending.pop(mid, None) is not None:
                self._published += 1
                self._lock.notify_all()
            elif mid in self._status_mids:
                self._status_mids.discard(mid)
            else:
                self._acked_unknown.add(mid)

    def _publish_status(self, state: str) -> mqtt.MQTTMessageInfo:
        info = self._client.publish(self.status_topic, self._status_payload(state),
                                    qos=1, retain=True)
        with self._lock:
            if info.mid in self._acked_unknown:
                self._acked_unknown.discard(info.mid)
            else:
                self._status_mids.add(info.mid)
        return info

    # -- AlarmSink -----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Alarms handed to the client and not yet acknowledged by the broker."""
        with self._lock:
            return len(self._pending)

    @property
    def published(self) -> int:
        """Alarms acknowledged by the broker (PUBACK)."""
        with self._lock:
            return self._published

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def open(self) -> None:
        """Connect and start the network thread; ``ConnectionError`` naming host:port if the
        broker refuses or is not reachable within ``connect_timeout_s`` (attempts are retried
        inside that window; stopping paho's thread may add up to a second)."""
        self._refused = None
        self._client.connect_async(self.host, self.port, keepalive=KEEPALIVE_S)
        self._client.loop_start()
        deadline = time.monotonic() + self.connect_timeout_s
        while not self._connected.wait(0.05):
            if self._refused is not None or time.monotonic() > deadline:
                self._client.loop_stop()
                raise ConnectionError(f"MQTT broker {self.host}:{self.port} {self._why()}")
        self._opened = True

    def _why(self) -> str:
        if self._refused is not None:
            return f"refused the connection: {self._refused}"
        why = f"not connected within {self.connect_timeout_s:g}s"
        try:  # paho does not report why its attempts failed: probe once for the reason
            socket.create_connection((self.host, self.port), timeout=1.0).close()
        except OSError as err:
            why += f" ({err})"
        return why

    def emit(self, alarm: Alarm) -> None:
        """Publish one alarm; queued in memory (never dropped) while the broker is away."""
        if not self._opened:
            raise RuntimeError("MqttSink not opened")
        topic = self.alarm_topic(alarm)
        info = self._client.publish(topic, alarm.to_json().encode("utf-8"), qos=self.qos)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise RuntimeError(f"MQTT publish of alarm {alarm.event_id} to {topic} failed: "
                               f"{mqtt.error_string(info.rc)}")
        with self._lock:
            if info.mid in self._acked_unknown:
                self._acked_unknown.discard(info.mid)
                self._published += 1
                self._lock.notify_all()
            else:
                self._pending[info.mid] = info
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            log.warning("mqtt disconnected, alarm queued", extra={
                "event_id": alarm.event_id, "topic": topic, "pending": self.pending})
        else:
            log.debug("alarm published", extra={"event_id": alarm.event_id, "topic": topic})

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every emitted alarm is acknowledged; True if none is left pending."""
        timeout = self.publish_timeout_s if timeout_s is None else timeout_s
        with self._lock:
            return self._lock.wait_for(lambda: not self._pending, timeout)

    def close(self) -> None:
        """Deliver what is pending (bounded), announce offline, disconnect cleanly."""
        if not self._opened:
            return
        start = time.monotonic()
        if not self.flush():
            log.warning("mqtt close: alarms not acknowledged, lost", extra={
                "pending": self.pending, "timeout_s": self.publish_timeout_s})
        if self._connected.is_set():
            info = self._publish_status("offline")
            left = max(0.1, self.publish_timeout_s - (time.monotonic() - start))
            try:
                info.wait_for_publish(left)
            except (RuntimeError, ValueError) as err:
                log.warning("mqtt close: offline status not sent", extra={"error": str(err)})
        self._opened = False
        self._client.disconnect()
        self._client.loop_stop()
        log.info("mqtt sink closed", extra={"published": self.published,
                                            "pending": self.pending})
