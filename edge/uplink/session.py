"""The edge box's MQTT session: connection, availability, and which publishes the broker acked.

One persistent session per edge (clean session off, client id ``perimeter-edge-{edge_id}``
unless given) that reconnects by itself. The edge's availability is the retained status topic
(``wire.topics.edge_status``, payload ``wire.messages.edge_status``): ``offline`` is the last
will, registered afresh before every (re)connect so its ``time`` says when the link came up,
``online`` follows every successful connect, and ``close`` publishes ``offline`` before it
disconnects cleanly.

Acknowledgements: every QoS 1 publish is registered by its message id with a *flight* (what
the caller wants back when the broker acks it; None for status messages). paho's network
thread may process the PUBACK before ``publish`` has returned the id; such an early ack is
remembered and ``publish`` reports it at once, so no ack is ever lost or counted twice.
``on_acked(flight)`` runs for every acked flight, on paho's network thread or on the thread
that published, while the flight still counts as in flight; only then, in one step under
``cond``, the flight leaves ``in_flight`` and joins ``acked``, and ``cond`` is notified (what
``MqttSink.flush`` waits on). So whoever sees a flight acknowledged also sees its effect
(the outbox entry deleted).

Clock offset: a box whose clock went wrong (dead RTC battery, NTP unreachable) stamps its
alarms with a wrong time; the central flags them, but an operator should see the box itself.
The session subscribes to the central's clock (``wire.topics.central_clock``, a few seconds
apart) and, for each live tick (a retained one may be old), takes ``clock_offset_s`` = its own
clock at arrival minus the central's time, corrected by half the MQTT round trip (the time
from a publish to its PUBACK, smoothed, ``clock_rtt_s``): positive when the box runs ahead. It
republishes its retained ``online`` status with the offset when it is first known and when it
moves by more than ``CLOCK_REPORT_S``, and hands every measurement to ``on_clock`` (the
``perimeter_edge_clock_offset_seconds`` gauge).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from wire import messages, topics
from wire.client import Broker, Will, connect, make_client, set_will, unreachable_reason

log = logging.getLogger(__name__)

CLOCK_REPORT_S = 1.0  # republish the status when the measured offset moves this much
CLOCK_WARN_S = 5.0  # log a warning (not info) when the box is off by more than this
RTT_WEIGHT = 0.2  # smoothing of the round trip (exponential moving average)


class PublishError(RuntimeError):
    """paho refused a publish outright (not a disconnection: those are queued)."""


class Session:
    """One edge box's connection to the broker (see the module docstring)."""

    def __init__(self, broker: Broker, *, edge_id: str, site: str = "default",
                 client_id: str | None = None, connect_timeout_s: float = 10.0,
                 publish_timeout_s: float = 10.0):
        self.broker = broker
        self.edge_id = topics.segment("edge_id", edge_id)
        self.site = topics.segment("site", site)
        self.status_topic = topics.edge_status(site, edge_id)
        self.client_id = client_id or f"perimeter-edge-{edge_id}"
        self.connect_timeout_s = connect_timeout_s
        self.publish_timeout_s = publish_timeout_s
        self.on_acked: Callable[[Any], None] = lambda flight: None
        self.on_link: Callable[[bool], None] = lambda up: None  # connected / lost
        self.on_clock: Callable[[float], None] = lambda offset: None  # each offset measured
        self.clock_topic = topics.central_clock(site)
        self.clock_offset_s: float | None = None
        self.clock_rtt_s: float | None = None
        self._reported_offset: float | None = None
        self._sent_at: dict[int, float] = {}  # mid -> monotonic time, publishes made online
        self.cond = threading.Condition()  # guards the registry; notified on every ack
        self._flights: dict[int, Any] = {}  # mid -> flight, for publishes not yet acked
        self._acked = 0  # flights acknowledged
        self._status: set[int] = set()  # status and retained messages in flight
        self._acked_early: set[int] = set()  # acks that overtook their registration
        self._connected = threading.Event()
        self._refused: str | None = None
        self.opened = False
        self.client = make_client(broker, self.client_id, persistent=True,
                                  logger=f"{__name__}.paho", will=self._will(),
                                  connect_timeout_s=connect_timeout_s)
        self.client.on_pre_connect = self._on_pre_connect
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def in_flight(self) -> int:
        """Publishes with a flight that the broker has not acknowledged yet."""
        with self.cond:
            return len(self._flights)

    @property
    def acked(self) -> int:
        """Publishes with a flight that the broker acknowledged (PUBACK)."""
        with self.cond:
            return self._acked

    def _will(self) -> Will:
        return Will(self.status_topic, messages.edge_status(messages.OFFLINE, self.edge_id))

    def _online(self) -> str:
        return messages.edge_status(messages.ONLINE, self.edge_id,
                                    clock_offset_s=self.clock_offset_s,
                                    clock_rtt_s=self.clock_rtt_s)

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, topic: str, payload: str | bytes, *, flight: Any = None, qos: int = 1,
                retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Hand one message to paho (queued while disconnected) and register it; with a
        ``flight``, ``on_acked(flight)`` follows the broker's ack. ``PublishError`` when paho
        refuses it outright."""
        sent = time.monotonic()
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise PublishError(f"MQTT publish to {topic} failed: {mqtt.error_string(info.rc)}")
        with self.cond:
            early = info.mid in self._acked_early
            if not early and qos > 0 and info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._sent_at[info.mid] = sent  # on the wire now: its PUBACK times a trip
            if early:
                self._acked_early.discard(info.mid)
            elif flight is None:
                self._status.add(info.mid)
            else:
                self._flights[info.mid] = flight
        if early and flight is not None:
            self._done(info.mid, flight)
        return info

    def publish_retained(self, topic: str, payload: str) -> None:
        """A retained QoS 1 message that is not an alarm (a live camera's status)."""
        self.publish(topic, payload, retain=True)

    def _done(self, mid: int, flight: Any) -> None:
        self.on_acked(flight)
        with self.cond:
            self._flights.pop(mid, None)
            self._acked += 1
            self.cond.notify_all()

    # -- paho callbacks (network thread) -------------------------------------------------------

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        set_will(client, self._will())  # fresh time in the will for this connection

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason: ReasonCode, properties: Properties | None) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            log.error("mqtt connect refused", extra={
                "broker": self.broker.address, "reason": str(reason)})
            return
        log.info("mqtt connected", extra={
            "broker": self.broker.address, "client_id": self.client_id,
            "session_present": flags.session_present, "in_flight": self.in_flight})
        self.publish(self.status_topic, self._online(), retain=True)
        self._reported_offset = self.clock_offset_s
        client.message_callback_add(self.clock_topic, self._on_clock)
        client.subscribe(self.clock_topic, qos=0)
        self.on_link(True)
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason: ReasonCode, properties: Properties | None) -> None:
        self.on_link(False)
        self._connected.clear()
        with self.cond:
            self._sent_at.clear()  # their PUBACKs, if any, will not time a round trip
        if self.opened:
            log.warning("mqtt connection lost, reconnecting", extra={
                "broker": self.broker.address, "reason": str(reason),
                "in_flight": self.in_flight})
        else:
            log.info("mqtt disconnected", extra={"broker": self.broker.address})

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Properties | None) -> None:
        # Runs under paho's message lock: on_acked must not call into paho. The mid is not
        # reused before this callback returns, so the flight stays registered until _done.
        now = time.monotonic()
        with self.cond:
            flight = self._flights.get(mid)
            if flight is None and mid not in self._status:
                self._acked_early.add(mid)
            self._status.discard(mid)
            sent = self._sent_at.pop(mid, None)
        if sent is not None:
            trip = now - sent
            rtt = self.clock_rtt_s
            self.clock_rtt_s = trip if rtt is None else rtt + RTT_WEIGHT * (trip - rtt)
        if flight is not None:
            self._done(mid, flight)

    def _on_clock(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """A tick of the central's clock: measure this box's offset (see the docstring)."""
        arrived = time.time()
        central = messages.parse_central_clock(msg.payload)
        if msg.retain or central is None:
            return  # a stored tick may be minutes old; a malformed one says nothing
        offset = arrived - (central + (self.clock_rtt_s or 0.0) / 2)
        self.clock_offset_s = offset
        self.on_clock(offset)
        last = self._reported_offset
        if last is None or abs(offset - last) > CLOCK_REPORT_S:
            self._reported_offset = offset
            log.log(logging.WARNING if abs(offset) > CLOCK_WARN_S else logging.INFO,
                    "edge clock offset from the central", extra={
                        "edge_id": self.edge_id, "offset_s": round(offset, 3),
                        "rtt_s": round(self.clock_rtt_s or 0.0, 4)})
            if self._connected.is_set():
                self.publish(self.status_topic, self._online(), retain=True)

    # -- connect and close ---------------------------------------------------------------------

    def open(self, *, require_connection: bool) -> None:
        """Connect and start the network thread; ``ConnectionError`` naming the broker if it
        refuses, or (``require_connection``) is not reachable within ``connect_timeout_s``.

        Without ``require_connection`` (a 24/7 edge worker) a broker that is merely
        unreachable is logged and retried in the background; a refusal (credentials) still
        raises."""
        self._refused = None
        connect(self.client, self.broker)
        deadline = time.monotonic() + self.connect_timeout_s
        while not self._connected.wait(0.05):
            late = time.monotonic() > deadline
            if self._refused is None and late and not require_connection:
                log.warning("mqtt broker unreachable at start; alarms are kept and sent once "
                            "it answers", extra={"broker": self.broker.address,
                                                 "why": self.why()})
                break
            if self._refused is not None or late:
                self.client.loop_stop()
                raise ConnectionError(f"MQTT broker {self.broker.address} {self.why()}")
        self.opened = True

    def why(self) -> str:
        return unreachable_reason(self.broker, self._refused, self.connect_timeout_s)

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Until ``predicate()`` (re-checked on every ack) or the timeout; its last value."""
        with self.cond:
            return self.cond.wait_for(predicate, timeout_s)

    def close(self, started: float) -> None:
        """Announce ``offline`` (waiting what is left of ``publish_timeout_s`` since
        ``started``), disconnect cleanly and stop the network thread."""
        if self._connected.is_set():
            info = self.publish(self.status_topic,
                                messages.edge_status(messages.OFFLINE, self.edge_id),
                                retain=True)
            left = max(0.1, self.publish_timeout_s - (time.monotonic() - started))
            try:
                info.wait_for_publish(left)
            except (RuntimeError, ValueError) as err:
                log.warning("mqtt close: offline status not sent", extra={"error": str(err)})
        self.opened = False
        self.client.disconnect()
        self.client.loop_stop()
