"""MQTT intake: every edge worker's alarms into the aggregator, acknowledged only once stored.

Subscribes with QoS 1 on a persistent session (clean session off, fixed client id), so alarms
published while the aggregator restarts wait in the broker and arrive when it is back.
Several aggregators share the load with an MQTT shared subscription
(``$share/{group}/...``), each message going to one of them.

Acknowledgement is manual: paho's network thread only stamps a message's arrival and puts it
on a bounded queue; one writer thread takes what is queued, up to ``batch`` messages at once,
has the sink check them (``prepare``: the gate, which refuses a bad message alone) and store
the good ones in Redis (``store``: one round trip per batch), and sends the PUBACKs only after
that returned. While Redis is unavailable (down, loading, out of memory) the writer retries
the store with backoff and acknowledges nothing: the queue fills, the network thread waits,
and the broker holds every later message in our persistent session. If this process dies
meanwhile, the broker redelivers all of it to the next one. The broker must be allowed to
hold that much: Mosquitto keeps only ``max_queued_messages`` (default 1000) per session and
drops the rest, so a site sets it far higher (``deploy/mosquitto.conf``).

No message is ever dropped unaccounted. A retained message is refused (``retained``: the
broker replays a stored alarm, perhaps a planted one, to every new subscription, so it is
never news). If checking a batch raises (a bug: the gate refuses bad input without raising),
the batch is checked again one message at a time and only the message that raises is
refused (``error``). If storing raises anything but a Redis error (a bug again), the checked
messages are dead-lettered (``error``) rather than lost, and acknowledged.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import paho.mqtt.client as mqtt
import redis

from wire import topics
from wire.client import Broker, connect, disconnect, make_client

log = logging.getLogger(__name__)


class Incoming(NamedTuple):
    """One message as the broker delivered it, with its arrival on the central's clock."""

    payload: bytes
    topic: str
    arrived: float


class Sink(Protocol):
    """Where the intake hands messages: check a batch, then store what passed."""

    def prepare(self, items: list[Incoming]) -> list[Any]:
        """Check each message (refusing bad ones alone); what ``store`` will write."""

    def store(self, prepared: list[Any]) -> object:
        """Write in one go; raises ``redis.RedisError`` while Redis cannot take it."""

    def reject(self, payload: bytes, topic: str, reason: str) -> None:
        """Count and dead-letter one message refused outside the check."""

    def unstored(self, prepared: list[Any]) -> list[tuple[bytes, str]]:
        """The (payload, topic) of each prepared entry, to dead-letter if storing breaks."""


class _Msg(NamedTuple):
    item: Incoming
    mid: int
    qos: int
    retained: bool


class MqttIntake:
    """Feeds every site's alarm topics (``wire.topics.alarm_filter``) into ``sink``."""

    def __init__(self, sink: Sink, broker: Broker, *,
                 clock: Callable[[], float] = time.time,
                 client_id: str = "perimeter-central", share_group: str | None = None,
                 queue_size: int = 1000, batch: int = 256):
        self.sink = sink
        self.clock = clock
        self.batch = batch
        self.broker = broker
        self.topic = topics.alarm_filter(share_group=share_group)
        self.connected = threading.Event()
        self.reconnects = 0
        self.store_retries = 0
        self._queue: queue.Queue[_Msg | None] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="intake-writer",
                                         daemon=True)
        self.client = make_client(broker, client_id, persistent=True, manual_ack=True,
                                  logger=f"{__name__}.paho", reconnect_max_s=10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, rc: object,
                    _p: object = None) -> None:
        if getattr(rc, "is_failure", False):
            log.error("intake connect refused", extra={"reason": str(rc)})
            return
        client.subscribe(self.topic, qos=1)
        self.connected.set()
        log.info("intake connected", extra={"broker": self.broker.address})

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, rc: object,
                       _p: object = None) -> None:
        self.connected.clear()
        if getattr(rc, "is_failure", True):
            self.reconnects += 1
            log.warning("intake disconnected", extra={"reason": str(rc)})
        else:
            log.info("intake disconnected on request")

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        item = Incoming(bytes(msg.payload), msg.topic, self.clock())
        queued = _Msg(item, msg.mid, msg.qos, bool(msg.retain))
        while not self._stop.is_set():
            try:
                self._queue.put(queued, timeout=0.5)
                return
            except queue.Full:
                continue  # back-pressure: the broker holds the rest meanwhile

    def _write_loop(self) -> None:
        """Take what is queued (up to ``batch`` messages), store it, then acknowledge it."""
        while True:
            first = self._queue.get()
            self.last_turn = time.monotonic()
            items = [first]
            while first is not None and len(items) < self.batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            last = items[-1] is None
            msgs = [m for m in items if m is not None]
            if msgs and self._handle(msgs):
                for m in msgs:
                    if m.qos > 0:
                        self.client.ack(m.mid, m.qos)
            if last or first is None:
                return

    def _handle(self, msgs: list[_Msg]) -> bool:
        """Refuse retained messages, check the rest, store what passed; False on stop."""
        for m in msgs:
            if m.retained:
                self.sink.reject(m.item.payload, m.item.topic,
                                 "retained: a stored message replayed by the broker")
        prepared = self._prepare([m.item for m in msgs if not m.retained])
        return self._store(prepared) if prepared else True

    def _prepare(self, items: list[Incoming]) -> list[Any]:
        """The sink's check of a batch; if that raises, of each message alone, refusing only
        the one that raises."""
        try:
            return self.sink.prepare(items)
        except Exception:
            if len(items) == 1:
                item = items[0]
                log.exception("intake could not check a message; refused alone",
                              extra={"topic": item.topic[:200], "size": len(item.payload)})
                self.sink.reject(item.payload, item.topic, "error: check failed")
                return []
        return [entry for item in items for entry in self._prepare([item])]

    def _store(self, prepared: list[Any]) -> bool:
        """Store, retrying while Redis is unavailable; False on stop. A store that fails
        otherwise (a bug) dead-letters the messages instead of dropping them."""
        delay = 0.05
        while True:
            try:
                self.sink.store(prepared)
                return True
            except redis.RedisError as exc:  # down, loading, out of memory: not the input
                self.store_retries += 1
                log.warning("intake cannot store yet; retrying, not acknowledged",
                            extra={"error": str(exc)[:200], "retry_in_s": delay})
            except Exception:
                log.exception("intake could not store checked messages; dead-lettered",
                              extra={"count": len(prepared)})
                for payload, topic in self.sink.unstored(prepared):
                    self.sink.reject(payload, topic, "error: store failed")
                return True
            if self._stop.wait(delay):
                return False
            self.last_turn = time.monotonic()  # retrying is turning, not hanging
            delay = min(delay * 2, 2.0)

    last_turn = 0.0  # time.monotonic() when the writer last took or retried a batch

    def turning(self, within_s: float = 30.0) -> bool:
        """The writer thread lives and, with messages waiting, took or retried a batch within
        ``within_s``: what feeds systemd's watchdog (an idle intake is not a hung one)."""
        return self._writer.is_alive() and (
            self._queue.empty() or time.monotonic() - self.last_turn < within_s)

    def start(self, timeout_s: float = 10.0) -> None:
        self._writer.start()
        connect(self.client, self.broker)
        if not self.connected.wait(timeout_s):
            self.stop()
            raise ConnectionError(f"MQTT broker {self.broker.address} not reachable "
                                  f"within {timeout_s:g}s")

    def stop(self) -> None:
        """Stop taking messages; what was taken and stored is acknowledged first."""
        disconnect(self.client)
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._writer.join(timeout=5)
