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
(PUBACK) and ``published`` those acknowledged. Without an outbox, what is still pending when
the process exits is lost: ``close()`` waits up to ``publish_timeout_s`` and logs a warning.

Outbox (``outbox=Path``, see ``edge.outbox``): alarms then survive the process. ``emit``
first stores the alarm in the SQLite outbox (fsync'd), then publishes it; the PUBACK deletes
it. While the link is down, or while a replay is running, ``emit`` only stores the alarm. On
every (re)connect a replay thread republishes, oldest first, every stored alarm that is not
already in paho's hands (those paho resends itself), at most ``REPLAY_WINDOW`` unacknowledged
at a time, then new alarms go straight out again. So alarms left by an earlier run (crash,
restart, power cut) go out first, in order, before the ones emitted after the restart. A crash
between the broker's PUBACK and the deletion resends that alarm: duplicates are possible
(consumers deduplicate on ``event_id``), losses are not. If the outbox refuses an alarm (full:
``OutboxFull``; disk error) ``emit`` logs an error and publishes it from memory as without an
outbox, rather than stopping the pipeline. With an outbox, ``pending`` counts alarms handed to
paho and not yet acknowledged (replayed ones included), ``published`` every PUBACK received by
this process (replays of an earlier run's alarms included), ``backlog`` the alarms stored and
not yet acknowledged (in flight, waiting for the link or left by an earlier run); ``flush``
waits for both ``pending`` and ``backlog`` to reach 0, and ``close()`` leaves what is not
acknowledged in the outbox for the next start.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.mqttlog import paho_logger
from edge.outbox import DEFAULT_MAX_ENTRIES, Outbox, OutboxError
from zones.alarm import Alarm

log = logging.getLogger(__name__)

KEEPALIVE_S = 30
RECONNECT_MIN_DELAY_S = 1
RECONNECT_MAX_DELAY_S = 30
REPLAY_WINDOW = 100  # outbox replay: at most this many replayed alarms unacknowledged at once
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


@dataclass
class _Flight:
    """An alarm publish handed to paho and not yet acknowledged."""

    info: mqtt.MQTTMessageInfo
    event_id: str | None = None  # stored in the outbox: delete it on PUBACK
    replay: bool = False  # published by the replay thread (counts against REPLAY_WINDOW)


class MqttSink:
    """Publish alarms (QoS 1) and this edge's availability (retained) to an MQTT broker."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, *, edge_id: str,
                 site: str = "default", prefix: str = "perimeter/v1", qos: int = 1,
                 username: str | None = None, password: str | None = None,
                 client_id: str | None = None, connect_timeout_s: float = 10.0,
                 publish_timeout_s: float = 10.0, outbox: Path | None = None,
                 outbox_max_entries: int = DEFAULT_MAX_ENTRIES, require_connection: bool = True):
        if qos not in (1, 2):
            raise ValueError(f"qos must be 1 or 2 for alarms (at least once), got {qos}")
        self.host = host
        self.port = port
        self.require_connection = require_connection  # the default of ``open``
        self.edge_id = _check_segment("edge_id", edge_id)
        self.site = _check_segment("site", site)
        self.prefix = _check_prefix(prefix)
        self.qos = qos
        self.connect_timeout_s = connect_timeout_s
        self.publish_timeout_s = publish_timeout_s
        self.client_id = client_id or f"perimeter-edge-{edge_id}"
        self.status_topic = f"{prefix}/{site}/edge/{edge_id}/status"

        self.outbox_path = Path(outbox) if outbox is not None else None
        self.outbox_max_entries = outbox_max_entries

        self._lock = threading.Condition()
        self._pending: dict[int, _Flight] = {}  # alarm mid -> publish not acked
        self._status_mids: set[int] = set()  # status messages in flight, not counted
        self._acked_unknown: set[int] = set()  # acks that overtook their registration
        self._published = 0
        self._connected = threading.Event()
        self._refused: str | None = None
        self._opened = False
        # Outbox state, all under self._lock (see the module docstring).
        self._outbox: Outbox | None = None
        self._claims: Counter[str] = Counter()  # event_id -> publishes in paho's hands
        self._link_up = False  # connected, as the replay thread sees it
        self._backlog = False  # stored alarms may not be in paho's hands: emit defers
        self._cursor = 0  # replay: seq of the last outbox entry examined in this pass
        self._generation = 0  # bumped on every connect: restarts the replay pass
        self._deferred = False  # an emit deferred to the replay since its last read
        self._replay_inflight = 0  # replayed alarms not yet acknowledged
        self._stopping = False
        self._replayer: threading.Thread | None = None

        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False,
            protocol=MQTTProtocolVersion.MQTTv311, reconnect_on_failure=True)
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.max_queued_messages_set(0)  # unbounded: never refuse an alarm
        self._client.max_inflight_messages_set(20)
        self._client.reconnect_delay_set(RECONNECT_MIN_DELAY_S, RECONNECT_MAX_DELAY_S)
        self._client.connect_timeout = connect_timeout_s
        self._client.enable_logger(paho_logger(f"{__name__}.paho"))
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
            "session_present": flags.session_present, "pending": self.pending,
            "backlog": self.backlog})
        self._publish_status("online")
        if self._outbox is not None:
            with self._lock:  # start a replay pass from the oldest stored alarm
                self._link_up = True
                self._backlog = True
                self._cursor = 0
                self._generation += 1
                self._lock.notify_all()
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason: ReasonCode, properties: Properties | None) -> None:
        with self._lock:  # from now on emit only stores; the next connect replays
            self._link_up = False
            self._backlog = True
            self._generation += 1  # a replay pass running now must not clear _backlog
        self._connected.clear()
        if self._opened:
            log.warning("mqtt connection lost, reconnecting", extra={
                "host": self.host, "port": self.port, "reason": str(reason),
                "pending": self.pending, "backlog": self.backlog})
        else:
            log.info("mqtt disconnected", extra={"host": self.host, "port": self.port})

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Properties | None) -> None:
        # Runs under paho's message lock: never call into paho while holding self._lock.
        # The outbox entry is deleted before the ack is counted, so that a flush() that sees
        # the count also sees the outbox without it.
        with self._lock:
            flight = self._pending.get(mid)
        if flight is not None and flight.event_id is not None:
            self._outbox_done(flight.event_id)
        late = False  # registered between the two looks: delete it now, then release it
        with self._lock:
            acked = self._pending.pop(mid, None)
            if acked is not None:
                late = flight is None and acked.event_id is not None
                self._count_ack(acked, release=not late)
            elif mid in self._status_mids:
                self._status_mids.discard(mid)
            else:
                self._acked_unknown.add(mid)
        if late and acked is not None and acked.event_id is not None:
            self._outbox_done(acked.event_id)
            with self._lock:  # released only once deleted: the replay cannot resend it
                self._release(acked.event_id)
                self._lock.notify_all()

    def _count_ack(self, flight: _Flight, release: bool = True) -> None:
        """Under self._lock: one alarm acknowledged (its outbox entry already deleted)."""
        self._published += 1
        if release and flight.event_id is not None:
            self._release(flight.event_id)
        if flight.replay:
            self._replay_inflight -= 1
        self._lock.notify_all()

    def _release(self, event_id: str) -> None:
        """Under self._lock: one publish of ``event_id`` is no longer in paho's hands."""
        self._claims[event_id] -= 1
        if self._claims[event_id] <= 0:
            del self._claims[event_id]

    def _outbox_done(self, event_id: str) -> None:
        outbox = self._outbox
        if outbox is None:
            return
        try:
            outbox.done(event_id)
        except OutboxError as err:  # it stays stored: sent again later, a duplicate
            log.warning("outbox: acknowledged alarm not deleted", extra={
                "event_id": event_id, "error": str(err)})

    def _publish_status(self, state: str) -> mqtt.MQTTMessageInfo:
        info = self._client.publish(self.status_topic, self._status_payload(state),
                                    qos=1, retain=True)
        with self._lock:
            if info.mid in self._acked_unknown:
                self._acked_unknown.discard(info.mid)
            else:
                self._status_mids.add(info.mid)
        return info

    def publish_retained(self, topic: str, payload: str) -> None:
        """A retained QoS 1 message on this sink's connection (a live camera's status): not
        an alarm, so not counted in ``pending``/``published`` nor stored in the outbox; paho
        queues it while the link is down."""
        info = self._client.publish(topic, payload, qos=1, retain=True)
        with self._lock:
            if info.mid in self._acked_unknown:
                self._acked_unknown.discard(info.mid)
            else:
                self._status_mids.add(info.mid)

    # -- AlarmSink -----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Alarms handed to the client and not yet acknowledged by the broker."""
        with self._lock:
            return len(self._pending)

    @property
    def published(self) -> int:
        """Alarms acknowledged by the broker (PUBACK) in this process, replays included."""
        with self._lock:
            return self._published

    @property
    def backlog(self) -> int:
        """Alarms stored in the outbox and not yet acknowledged (0 without an open outbox):
        in flight, waiting for the link, or left by an earlier run."""
        outbox = self._outbox
        return 0 if outbox is None or outbox.closed else len(outbox)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def open(self, *, require_connection: bool | None = None) -> None:
        """Connect and start the network thread; ``ConnectionError`` naming host:port if the
        broker refuses or is not reachable within ``connect_timeout_s`` (attempts are retried
        inside that window; stopping paho's thread may add up to a second). With an outbox,
        open it first (``OutboxError`` if it cannot be) and start the replay thread.

        ``require_connection=False`` (a 24/7 edge worker): a broker that is merely unreachable
        is logged and retried in the background while the worker protects the site; alarms
        wait in the outbox (or paho's memory) and go out once it answers. A broker that
        refuses the connection (credentials) still raises."""
        self._refused = None
        if require_connection is None:
            require_connection = self.require_connection
        if self.outbox_path is not None:
            self._outbox = Outbox(self.outbox_path, max_entries=self.outbox_max_entries)
            if len(self._outbox):
                log.warning("outbox holds alarms from an earlier run, sent first", extra={
                    "path": str(self.outbox_path), "backlog": len(self._outbox)})
            self._start_replay()
        try:
            self._client.connect_async(self.host, self.port, keepalive=KEEPALIVE_S)
            self._client.loop_start()
            deadline = time.monotonic() + self.connect_timeout_s
            while not self._connected.wait(0.05):
                if self._refused is None and time.monotonic() > deadline and (
                        not require_connection):
                    log.warning("mqtt broker unreachable at start; alarms are kept and sent "
                                "once it answers", extra={
                                    "broker": f"{self.host}:{self.port}",
                                    "why": self._why(), "outbox": self._outbox is not None})
                    break
                if self._refused is not None or time.monotonic() > deadline:
                    self._client.loop_stop()
                    raise ConnectionError(
                        f"MQTT broker {self.host}:{self.port} {self._why()}")
        except BaseException:
            self._stop_replay()
            self._close_outbox()
            raise
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
        """Publish one alarm; queued in memory (never dropped) while the broker is away.
        With an outbox: stored on disk first, then published unless a replay has to send it
        (link down, or older alarms still to go out)."""
        if not self._opened:
            raise RuntimeError("MqttSink not opened")
        topic = self.alarm_topic(alarm)
        payload = alarm.to_json().encode("utf-8")
        event_id = self._store(alarm.event_id, topic, payload)
        if event_id is not None:
            with self._lock:
                deferred = self._backlog
                if deferred:  # the replay sends it, after the older ones
                    self._release(event_id)
                    self._deferred = True
                    self._lock.notify_all()
            if deferred:
                level = logging.DEBUG if self.connected else logging.WARNING
                log.log(level, "alarm stored in the outbox, the replay sends it", extra={
                    "event_id": alarm.event_id, "topic": topic, "backlog": self.backlog})
                return
        try:
            info = self._publish_alarm(topic, payload, alarm.event_id,
                                       stored=event_id is not None)
        except RuntimeError:
            if event_id is None:
                raise
            log.error("mqtt publish of a stored alarm failed, left to the replay", exc_info=True,
                      extra={"event_id": alarm.event_id, "topic": topic})
            self._rescan()
            return
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            log.warning("mqtt disconnected, alarm queued", extra={
                "event_id": alarm.event_id, "topic": topic, "pending": self.pending})
        else:
            log.debug("alarm published", extra={"event_id": alarm.event_id, "topic": topic})

    def _store(self, event_id: str, topic: str, payload: bytes) -> str | None:
        """Claim and store the alarm in the outbox; its event_id if stored, else None."""
        outbox = self._outbox
        if outbox is None:
            return None
        with self._lock:  # claimed before it is visible to the replay: never sent twice
            self._claims[event_id] += 1
        try:
            outbox.add(event_id, topic, payload)
        except BaseException as err:
            with self._lock:
                self._release(event_id)
            if not isinstance(err, OutboxError):
                raise
            log.error("alarm NOT stored in the outbox, published from memory only", extra={
                "event_id": event_id, "topic": topic, "error": str(err),
                "path": str(self.outbox_path)})
            return None
        return event_id

    def _publish_alarm(self, topic: str, payload: bytes, alarm_event_id: str, *,
                       stored: bool, replay: bool = False) -> mqtt.MQTTMessageInfo:
        """Hand one alarm to paho and track it. A ``stored`` alarm is claimed by the caller;
        the claim is released here when the publish fails (``RuntimeError``)."""
        event_id = alarm_event_id if stored else None
        try:
            info = self._client.publish(topic, payload, qos=self.qos)
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                raise RuntimeError(f"MQTT publish of alarm {alarm_event_id} to {topic} failed: "
                                   f"{mqtt.error_string(info.rc)}")
        except BaseException:
            if event_id is not None:
                with self._lock:
                    self._release(event_id)
            raise
        flight = _Flight(info, event_id, replay)
        with self._lock:
            overtaken = info.mid in self._acked_unknown
            if overtaken:
                self._acked_unknown.discard(info.mid)
            else:
                self._pending[info.mid] = flight
                if replay:
                    self._replay_inflight += 1
        if overtaken:  # the PUBACK came before the registration above
            if event_id is not None:
                self._outbox_done(event_id)
            with self._lock:
                self._count_ack(_Flight(info, event_id))
        return info

    # -- outbox replay (its own thread) --------------------------------------------------------

    def _start_replay(self) -> None:
        with self._lock:
            self._stopping = False
            self._backlog = True  # until the first replay pass has caught up
            self._link_up = False
        self._replayer = threading.Thread(target=self._replay_loop, name="mqtt-outbox-replay",
                                          daemon=True)
        self._replayer.start()

    def _stop_replay(self) -> None:
        thread = self._replayer
        if thread is None:
            return
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        thread.join(timeout=max(1.0, self.publish_timeout_s))
        self._replayer = None

    def _rescan(self) -> None:
        """Start the replay pass again from the oldest entry (after a failed publish)."""
        with self._lock:
            self._backlog = True
            self._cursor = 0
            self._generation += 1
            self._lock.notify_all()

    def _replay_ready(self) -> bool:
        return self._stopping or (self._link_up and self._backlog
                                  and self._replay_inflight < REPLAY_WINDOW)

    def _replay_loop(self) -> None:
        """Send stored alarms not in paho's hands, oldest first, ``REPLAY_WINDOW`` at a time;
        once a pass finds nothing more, clear ``_backlog`` so that emit publishes directly."""
        outbox = self._outbox
        assert outbox is not None
        while True:
            with self._lock:
                self._lock.wait_for(self._replay_ready)
                if self._stopping:
                    return
                generation, after = self._generation, self._cursor
                room = REPLAY_WINDOW - self._replay_inflight
                self._deferred = False
            try:
                page = outbox.pending(room, after=after)
            except OutboxError as err:
                log.error("outbox replay: cannot read, retrying", extra={"error": str(err)})
                with self._lock:
                    self._lock.wait_for(lambda: self._stopping, timeout=1.0)
                continue
            if not page:
                with self._lock:
                    if (generation == self._generation and self._link_up
                            and not self._deferred):
                        self._backlog = False  # caught up: emit publishes directly again
                        log.debug("outbox replay caught up", extra={"cursor": after})
                continue
            for entry in page:
                with self._lock:
                    if generation != self._generation or self._stopping:
                        break  # reconnected (or closing): the next pass starts over
                    self._cursor = entry.seq
                    if self._claims[entry.event_id] > 0:
                        continue  # paho holds it and resends it itself
                    self._claims[entry.event_id] += 1
                try:
                    self._publish_alarm(entry.topic, entry.payload, entry.event_id,
                                        stored=True, replay=True)
                except RuntimeError as err:
                    log.error("outbox replay: publish failed, retrying", extra={
                        "event_id": entry.event_id, "error": str(err)})
                    with self._lock:
                        if generation == self._generation:
                            self._cursor = entry.seq - 1
                        self._lock.wait_for(lambda: self._stopping, timeout=1.0)
                    break
                log.debug("alarm replayed from the outbox", extra={
                    "event_id": entry.event_id, "seq": entry.seq})

    def _close_outbox(self) -> None:
        outbox, self._outbox = self._outbox, None
        if outbox is not None:
            outbox.close()

    # -- flush and close -----------------------------------------------------------------------

    def _settled(self) -> bool:
        """Under self._lock: nothing in flight and nothing stored."""
        return not self._pending and self.backlog == 0

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every emitted alarm is acknowledged; True if none is left pending (nor,
        with an outbox, stored: replays of an earlier run's alarms included)."""
        timeout = self.publish_timeout_s if timeout_s is None else timeout_s
        with self._lock:
            return self._lock.wait_for(self._settled, timeout)

    def close(self) -> None:
        """Deliver what is pending (bounded), announce offline, disconnect cleanly. With an
        outbox, what is not acknowledged stays stored and goes out after the next ``open``."""
        if not self._opened:
            return
        start = time.monotonic()
        if not self.flush():
            if self._outbox is not None:
                log.warning("mqtt close: alarms not acknowledged, kept in the outbox", extra={
                    "pending": self.pending, "backlog": self.backlog,
                    "path": str(self.outbox_path), "timeout_s": self.publish_timeout_s})
            else:
                log.warning("mqtt close: alarms not acknowledged, lost", extra={
                    "pending": self.pending, "timeout_s": self.publish_timeout_s})
        self._stop_replay()
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
        backlog = self.backlog
        self._close_outbox()
        log.info("mqtt sink closed", extra={"published": self.published,
                                            "pending": self.pending, "backlog": backlog})
