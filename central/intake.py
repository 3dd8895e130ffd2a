"""MQTT intake: every edge worker's alarms into the aggregator.

Subscribes with QoS 1 on a persistent session (clean session off, fixed client id), so alarms
published while the aggregator restarts wait in the broker and arrive when it is back.
Several aggregators share the load with an MQTT shared subscription
(``$share/{group}/...``), each message going to one of them. Messages are handed to the
aggregator in paho's network thread; ``Aggregator.ingest`` never raises for bad input.
"""

from __future__ import annotations

import logging
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from central.service import Aggregator

log = logging.getLogger(__name__)


class MqttIntake:
    """Feeds ``{prefix}/+/alarm/#`` into an Aggregator."""

    def __init__(self, aggregator: Aggregator, host: str = "127.0.0.1", port: int = 1883, *,
                 client_id: str = "perimeter-central", share_group: str | None = None,
                 prefix: str = "perimeter/v1", username: str | None = None,
                 password: str | None = None):
        self.aggregator = aggregator
        self.host, self.port = host, port
        topic = f"{prefix}/+/alarm/#"
        self.topic = f"$share/{share_group}/{topic}" if share_group else topic
        self.connected = threading.Event()
        self.reconnects = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=False, protocol=mqtt.MQTTv311)
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, rc: object,
                    _p: object = None) -> None:
        if getattr(rc, "is_failure", False):
            log.error("intake connect refused", extra={"reason": str(rc)})
            return
        client.subscribe(self.topic, qos=1)
        self.connected.set()
        log.info("intake connected", extra={"host": self.host, "port": self.port})

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, rc: object,
                       _p: object = None) -> None:
        self.connected.clear()
        if getattr(rc, "is_failure", True):
            self.reconnects += 1
            log.warning("intake disconnected", extra={"reason": str(rc)})
        else:
            log.info("intake disconnected on request")

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            self.aggregator.ingest(bytes(msg.payload), msg.topic)
        except Exception:  # Redis down: log; QoS 1 redelivers what was not acknowledged
            log.exception("intake could not store a message", extra={"topic": msg.topic})

    def start(self, timeout_s: float = 10.0) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(timeout_s):
            self.stop()
            raise ConnectionError(f"MQTT broker {self.host}:{self.port} not reachable "
                                  f"within {timeout_s:g}s")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
