"""The one place where MQTT clients are made (paho-mqtt 2.x, MQTT 3.1.1).

Every publisher and subscriber of the system (edge alarm uplink, radar intake, central
intake and command publisher, notifier bridge, speaker agent, simulators, demo) gets its
client from ``make_client``, so credentials, TLS, the last will, reconnect backoff and
logging are decided once.

Identity on the wire: a ``Broker`` names where to connect and as whom (username and
password, optionally a client certificate) and, with ``tls``, how the broker's certificate is
checked (the site's CA file, or the system's trust store; the host name is always checked).
Passwords come from a file or an environment variable (``read_secret``), never from a command
line, so ``ps`` does not show them. ``perimeter pki`` (``wire.pki``) issues the certificates,
the passwords and the broker's ACL entries.

Clients never drop a QoS 1 message while disconnected: paho queues them in memory
(``max_queued_messages`` 0 means unbounded) and sends them after the reconnect.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

KEEPALIVE_S = 30
PLAIN_PORT, TLS_PORT = 1883, 8883
PASSWORD_ENV = "PERIMETER_MQTT_PASSWORD"


@dataclass(frozen=True)
class Tls:
    """How a client checks the broker and proves itself: TLS 1.2 or newer, the broker's
    certificate verified against ``ca_file`` (None: the system's trust store) and its host
    name checked; ``cert_file`` and ``key_file`` are this device's own certificate."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both cert_file and key_file")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"TLS {name} {path} is not a readable file")

    def context(self) -> ssl.SSLContext:
        """The client side's SSL context (``ssl.SSLError`` on a bad certificate or key)."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


@dataclass(frozen=True)
class Broker:
    """Where a client connects, and as whom (``repr`` never shows the password)."""

    host: str = "127.0.0.1"
    port: int = PLAIN_PORT
    username: str | None = None
    password: str | None = None
    tls: Tls | None = None

    @classmethod
    def parse(cls, address: str, **kw: object) -> Broker:
        """``host:port`` (a bare host means port 1883, or 8883 with ``tls``); ``ValueError``
        on a bad port. ``kw``: the other fields."""
        default = TLS_PORT if kw.get("tls") is not None else PLAIN_PORT
        host, sep, port = address.rpartition(":")
        if not sep:
            return cls(address or "127.0.0.1", default, **kw)  # type: ignore[arg-type]
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad MQTT broker address {address!r}: want host:port")
        return cls(host or "127.0.0.1", int(port), **kw)  # type: ignore[arg-type]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``mqtts://user@host:port`` or ``mqtt://host:port``: for logs (no password)."""
        who = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{who}{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"Broker({self.url})"


def read_secret(file: str | Path | None = None, env: str | None = None) -> str | None:
    """A password from ``file`` (its first line) or else the environment variable ``env``;
    None when neither gives one. ``ValueError`` when the file cannot be read."""
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as err:
            raise ValueError(f"cannot read the password file {file}: {err.strerror}") from None
        first = text.splitlines()[0] if text else ""
        if not first:
            raise ValueError(f"the password file {file} is empty")
        return first
    if env:
        return os.environ.get(env) or None
    return None


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
    if broker.tls is not None:
        client.tls_set_context(broker.tls.context())
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
    """Why a client did not connect, in words: the broker's refusal, or one TCP (and TLS)
    probe (paho does not report why its attempts failed: a certificate the broker refused, or
    one of the broker's that this client does not trust, shows here)."""
    if refused is not None:
        return f"refused the connection: {refused}"
    why = f"not connected within {waited_s:g}s"
    try:
        sock = socket.create_connection((broker.host, broker.port), timeout=1.0)
    except OSError as err:
        return f"{why} ({err})"
    try:
        if broker.tls is not None:
            with broker.tls.context().wrap_socket(sock, server_hostname=broker.host) as tls:
                tls.recv(1)  # TLS 1.3 reports a refused client certificate only on a read
    except TimeoutError:
        pass  # the handshake held and the broker waits for a CONNECT: nothing to add
    except ssl.SSLError as err:
        why += f" (TLS: {err.reason or err})"
    except OSError as err:
        why += f" ({err})"
    finally:
        sock.close()
    return why
