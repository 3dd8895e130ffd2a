"""The one place where MQTT clients are made (paho-mqtt 2.x, MQTT 3.1.1).

Every publisher and subscriber of the system (edge alarm uplink, radar intake, central
intake and command publisher, notifier bridge, speaker agent, simulators, demo) gets its
client from ``make_client``, so credentials, the last will, reconnect backoff and logging
are decided once; securing the link (TLS, per-device identity) changes this module only.

Clients never drop a QoS 1 message while disconnected: paho queues them in memory
(``max_queued_messages`` 0 means unbounded) and sends them after the reconnect.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

KEEPALIVE_S = 30


@dataclass(frozen=True)
class Broker:
    """Where a client connects, and as whom."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, address: str, **kw: str | None) -> Broker:
        """``host:port`` (a bare host means port 1883); ``ValueError`` on a bad port."""
        host, sep, port = address.rpartition(":")
        if not sep:
            return cls(address or "127.0.0.1", 1883, **kw)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad MQTT broker address {address!r}: want host:port")
        return cls(host or "127.0.0.1", int(port), **kw)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Will:
    """The message the broker publishes for a client that vanishes without DISCONNECT."""

    topic: str
    payload: str | bytes
    qos: int = 1
    retain: bool = True


class _ClosedSocketNoise(logging.Filter):
    """paho 2.x logs "Client is not connected" at ERROR when its network thread runs one
    more loop after a clean ``disconnect()``. Our clients report real outages themselves
    (on_disconnect), so that line would only teach operators to ignore ERRORs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


_NOISE = _ClosedSocketNoise()


def paho_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with the noise filter attached (once)."""
    logger = logging.getLogger(name)
    if _NOISE not in logger.filters:
        logger.addFilter(_NOISE)
    return logger


def make_client(broker: Broker, client_id: str, *, persistent: bool, logger: str,
                will: Will | None = None, manual_ack: bool = False,
                reconnect_max_s: int = 30, connect_timeout_s: float = 10.0) -> mqtt.Client:
    """A configured client, not yet connected (``connect`` connects it).

    ``persistent``: clean session off, so the broker keeps the subscriptions and queues QoS 1
    messages for this ``client_id`` while it is away (alarms, commands); a fixed id is then
    required. ``manual_ack``: PUBACKs are sent by ``client.ack`` once the message is stored.
    ``logger``: the name paho logs under (noise-filtered).
    """
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=not persistent, protocol=MQTTProtocolVersion.MQTTv311,
                         reconnect_on_failure=True, manual_ack=manual_ack)
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    client.max_queued_messages_set(0)  # unbounded: never refuse a QoS 1 message
    client.reconnect_delay_set(1, reconnect_max_s)
    client.connect_timeout = connect_timeout_s
    client.enable_logger(paho_logger(logger))
    if will is not None:
        set_will(client, will)
    return client


def set_will(client: mqtt.Client, will: Will) -> None:
    """(Re)register the last will; call before a (re)connect to refresh its payload."""
    client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)


def connect(client: mqtt.Client, broker: Broker, keepalive: int = KEEPALIVE_S) -> None:
    """Connect in the background and run paho's network thread; a broker that is down is
    retried with the client's backoff (callers wait for on_connect if they must)."""
    client.connect_async(broker.host, broker.port, keepalive=keepalive)
    client.loop_start()


def disconnect(client: mqtt.Client) -> None:
    """Disconnect cleanly and end the network thread."""
    client.disconnect()
    client.loop_stop()


def unreachable_reason(broker: Broker, refused: str | None, waited_s: float) -> str:
    """Why a client did not connect, in words: the broker's refusal, or one TCP probe (paho
    does not report why its attempts failed)."""
    if refused is not None:
        return f"refused the connection: {refused}"
    why = f"not connected within {waited_s:g}s"
    try:
        socket.create_connection((broker.host, broker.port), timeout=1.0).close()
    except OSError as err:
        why += f" ({err})"
    return why
