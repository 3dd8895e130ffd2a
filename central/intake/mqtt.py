"""MQTT intake: every edge worker's alarms into the aggregator, acknowledged only once stored.

Subscribes with QoS 1 on a persistent session (clean session off, fixed client id), so alarms
published while the aggregator restarts wait in the broker and arrive when it is back.
Several aggregators share the load with an MQTT shared subscription
(``$share/{group}/...``), each message going to one of them.

Acknowledgement is manual: paho's network thread only puts a message on a bounded queue; one
writer thread hands what is queued, up to ``batch`` messages at once, to ``deliver``
(validate, then store in Redis: one round trip per batch when ``deliver`` has ``many``) and
sends the PUBACKs only after that returned. While Redis is down the writer retries the same
messages with backoff and acknowledges nothing: the queue fills, the network thread waits,
and the broker holds every later message in our persistent session. If this process dies
meanwhile, the broker redelivers all of it to the next one. The broker must be allowed to
hold that much: Mosquitto keeps only ``max_queued_messages`` (default 1000) per session and
drops the rest, so a site sets it far higher (``deploy/mosquitto.conf``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import paho.mqtt.client as mqtt
import redis

from wire import topics
from wire.client import Broker, connect, disconnect, make_client

log = logging.getLogger(__name__)

Deliver = Callable[[bytes, str], object]
DeliverMany = Callable[[list[tuple[bytes, str]]], object]


class _Msg(NamedTuple):
    payload: bytes
    topic: str
    mid: int
    qos: int


class MqttIntake:
    """Feeds every site's alarm topics (``wire.topics.alarm_filter``) into
    ``deliver(payload, topic)``."""

    def __init__(self, deliver: Deliver, broker: Broker, *,
                 client_id: str = "perimeter-central", share_group: str | None = None,
                 queue_size: int = 1000, batch: int = 256):
        self.deliver = deliver
        # ``deliver.many(items)`` stores a batch in one round trip when it has it
        self._many: DeliverMany | None = getattr(deliver, "many", None)
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
        item = _Msg(bytes(msg.payload), msg.topic, msg.mid, msg.qos)
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.5)
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
            if msgs and self._deliver(msgs):
                for m in msgs:
                    if m.qos > 0:
                        self.client.ack(m.mid, m.qos)
            if last or first is None:
                return

    def _deliver(self, items: list[_Msg]) -> bool:
        """Hand messages over, retrying while Redis is unavailable; False on stop."""
        delay = 0.05
        while True:
            try:
                if self._many is not None:
                    self._many([(m.payload, m.topic) for m in items])
                else:
                    for m in items:
                        self.deliver(m.payload, m.topic)
                return True
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self.store_retries += 1
                log.warning("intake cannot store yet; retrying, not acknowledged",
                            extra={"error": str(exc), "retry_in_s": delay})
            except Exception:  # a bug, not bad input (deliver never raises for that)
                log.exception("intake could not handle messages; dropped",
                              extra={"topics": sorted({m.topic for m in items})[:5]})
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
