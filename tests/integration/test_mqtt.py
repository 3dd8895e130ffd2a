"""MqttSink against a real Mosquitto: topics, payloads, availability, last will, broker restart.

Every test uses its own site and edge id, so a shared broker (127.0.0.1:1883) with other
users, retained messages or persisted sessions cannot disturb it. Synchronisation is by
waiting on queues and events with timeouts, never by sleeping.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

import edge.uplink.backlog
from common.net import free_port
from edge.uplink.outbox import Outbox
from edge.uplink.sink import MqttSink
from tests.support.alarms import numbered as make_alarm
from tests.support.alarms import unique
from tests.support.services import REPO_ROOT, MosquittoBroker
from tests.support.waiting import wait_until
from zones.alarm import Alarm, AlarmKind, AlarmState

TIMEOUT = 10.0
ALARM_FILTER = "perimeter/v2/+/alarm/#"


class Subscriber:
    """A real paho subscriber collecting messages into a queue."""

    def __init__(self, host: str, port: int, topic: str, *, client_id: str | None = None,
                 clean_session: bool = True):
        self.topic = topic
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or unique("sub"),
                                  clean_session=clean_session,
                                  protocol=MQTTProtocolVersion.MQTTv311)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = lambda c, u, msg: self.messages.put(msg)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        assert self.subscribed.wait(TIMEOUT), f"no SUBACK for {topic}"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if not flags.session_present:  # a restored session keeps its subscription
            client.subscribe(self.topic, qos=1)

    def get(self, timeout: float = TIMEOUT) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message on {self.topic} within {timeout:g}s") from None

    def wait_for(self, pred: Callable[[mqtt.MQTTMessage], bool],
                 timeout: float = TIMEOUT) -> mqtt.MQTTMessage:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.get(max(0.0, deadline - time.monotonic()))
            if pred(msg):
                return msg

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def status_of(msg: mqtt.MQTTMessage) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(msg.payload)
    return doc


def is_state(state: str) -> Callable[[mqtt.MQTTMessage], bool]:
    return lambda msg: bool(msg.payload) and status_of(msg)["state"] == state


def clean_up(host: str, port: int, topic: str, client_id: str) -> None:
    """Leave a shared, persistent broker as found: drop the retained status (empty retained
    payload) and the sink's persistent session (a clean-session connect with its id)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    client.connect(host, port)
    client.loop_start()
    client.publish(topic, b"", qos=1, retain=True).wait_for_publish(TIMEOUT)
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def subscribers() -> Iterator[list[Subscriber]]:
    made: list[Subscriber] = []
    yield made
    for sub in made:
        sub.close()


@pytest.fixture
def shared_sink(mqtt_broker: tuple[str, int]) -> Iterator[MqttSink]:
    """An unopened sink with a unique site and edge on the session broker."""
    host, port = mqtt_broker
    sink = MqttSink(host, port, edge_id=unique("edge"), site=unique("site"),
                    connect_timeout_s=TIMEOUT, publish_timeout_s=TIMEOUT)
    yield sink
    sink.close()
    clean_up(host, port, sink.status_topic, sink.client_id)


def test_every_alarm_arrives_on_documented_topic(
        mqtt_broker: tuple[str, int], shared_sink: MqttSink,
        subscribers: list[Subscriber]) -> None:
    host, port = mqtt_broker
    site = shared_sink.site
    sub = Subscriber(host, port, ALARM_FILTER)
    subscribers.append(sub)
    shared_sink.open()
    alarms = [make_alarm(i, camera=f"cam-{i % 2}", kind=kind, state=state)
              for i, (kind, state) in enumerate(
                  [(k, s) for k in AlarmKind for s in AlarmState])]
    alarms.append(make_alarm(99, camera="gate/1+#", zone="pier#2"))  # unsafe ids
    for alarm in alarms:
        shared_sink.emit(alarm)
    assert shared_sink.flush(), f"{shared_sink.pending} alarms not acknowledged"
    assert (shared_sink.published, shared_sink.pending) == (len(alarms), 0)

    got: dict[str, mqtt.MQTTMessage] = {}
    while len(got) < len(alarms):
        msg = sub.wait_for(lambda m: m.topic.split("/")[2] == site)  # ignore other users
        got[Alarm.from_json(bytes(msg.payload)).event_id] = msg
    for alarm in alarms:
        msg = got[alarm.event_id]
        camera = alarm.camera.replace("/", "_").replace("+", "_").replace("#", "_")
        zone = alarm.zone.replace("#", "_")
        edge = shared_sink.edge_id  # v2: the edge's id, which the broker's ACL checks
        assert msg.topic == (f"perimeter/v2/{site}/alarm/{edge}/{camera}/{zone}/"
                             f"{alarm.kind.value}")
        assert msg.qos == 1 and not msg.retain
        assert msg.payload == alarm.to_json().encode("utf-8")
        assert Alarm.from_json(bytes(msg.payload)) == alarm
    assert got[alarms[-1].event_id].topic.endswith("/gate_1__/pier_2/intrusion")


def test_retained_status_online_then_offline(
        mqtt_broker: tuple[str, int], shared_sink: MqttSink,
        subscribers: list[Subscriber]) -> None:
    host, port = mqtt_broker
    topic = f"perimeter/v1/{shared_sink.site}/edge/{shared_sink.edge_id}/status"
    assert shared_sink.status_topic == topic
    before = time.time()
    shared_sink.open()
    # open() returns once connected, with the online status handed to paho: subscribe once
    # the broker has it, so the subscriber gets it as the retained message
    wait_until(lambda: not shared_sink.session._status, what="online status acknowledged")
    sub = Subscriber(host, port, topic)  # fresh: sees only the retained message
    subscribers.append(sub)
    msg = sub.get()
    status = status_of(msg)
    assert msg.retain and msg.qos == 1
    assert status == {"state": "online", "edge_id": shared_sink.edge_id, "time": status["time"]}
    assert before - 1 <= status["time"] <= time.time() + 1

    shared_sink.close()
    late = Subscriber(host, port, topic)
    subscribers.append(late)
    msg = late.get()
    assert msg.retain and status_of(msg)["state"] == "offline"
    assert status_of(msg)["edge_id"] == shared_sink.edge_id


def test_last_will_marks_crashed_edge_offline(
        mosquitto_private: MosquittoBroker, subscribers: list[Subscriber]) -> None:
    host, port = mosquitto_private.address
    sink = MqttSink(host, port, edge_id="edge-will", connect_timeout_s=TIMEOUT)
    sub = Subscriber(host, port, sink.status_topic)
    subscribers.append(sub)
    sink.open()
    sub.wait_for(is_state("online"))
    wait_until(lambda: not sink.session._status, what="online status acknowledged")
    # Crash: the network thread stops without DISCONNECT, then the TCP link just dies.
    sink.session.client.loop_stop()
    sock = sink.session.client.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()

    assert status_of(sub.wait_for(is_state("offline")))["edge_id"] == "edge-will"
    late = Subscriber(host, port, sink.status_topic)  # the will was retained
    subscribers.append(late)
    msg = late.get()
    assert msg.retain and status_of(msg)["state"] == "offline"


def test_dropped_connection_reconnects_and_republishes_online(
        mosquitto_private: MosquittoBroker, subscribers: list[Subscriber]) -> None:
    host, port = mosquitto_private.address
    sink = MqttSink(host, port, edge_id="edge-drop", connect_timeout_s=TIMEOUT)
    sub = Subscriber(host, port, sink.status_topic)
    subscribers.append(sub)
    sink.open()
    try:
        sub.wait_for(is_state("online"))
        sock = sink.session.client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)  # link dies under a running client: no DISCONNECT
        sub.wait_for(is_state("offline"))  # the will
        sub.wait_for(is_state("online"))  # the client reconnected by itself
        sink.emit(make_alarm(1))
        assert sink.flush() and sink.published == 1
    finally:
        sink.close()
    sub.wait_for(is_state("offline"))


def test_alarms_emitted_while_broker_down_are_delivered_after_restart(
        mosquitto_private: MosquittoBroker, subscribers: list[Subscriber]) -> None:
    host, port = mosquitto_private.address
    # A persistent QoS 1 session survives the restart (broker persistence, SIGTERM saves it)
    # and holds whatever is published while this subscriber is still reconnecting.
    sub = Subscriber(host, port, ALARM_FILTER, client_id=unique("persistent-sub"),
                     clean_session=False)
    subscribers.append(sub)
    sink = MqttSink(host, port, edge_id="edge-restart", site="park",
                    connect_timeout_s=TIMEOUT, publish_timeout_s=TIMEOUT)
    sink.open()
    try:
        first = make_alarm(0)
        sink.emit(first)
        assert Alarm.from_json(bytes(sub.get().payload)) == first

        mosquitto_private.stop()
        wait_until(lambda: not sink.connected, what="sink to notice the broker is gone")
        down = [make_alarm(i, zone=f"water-{i}") for i in range(1, 6)]
        for alarm in down:
            sink.emit(alarm)
        assert sink.pending == 5
        mosquitto_private.start()

        got = [Alarm.from_json(bytes(sub.get(timeout=15.0).payload)) for _ in down]
        assert sorted(a.event_id for a in got) == sorted(a.event_id for a in down)
        assert {a.event_id: a for a in got} == {a.event_id: a for a in down}
        assert sink.flush(), f"{sink.pending} alarms not acknowledged after reconnect"
        assert (sink.published, sink.pending) == (6, 0)
    finally:
        sink.close()


# -- durable outbox: alarms survive the broker and the edge process dying ----------------------


def collect_event_ids(sub: Subscriber, expected: set[str], timeout: float = 30.0,
                      order: list[str] | None = None) -> list[str]:
    """Event ids in order of arrival (duplicates kept) until every expected one has come;
    appended to ``order`` (what came before) if given."""
    deadline = time.monotonic() + timeout
    order = [] if order is None else order
    while not expected <= set(order):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{len(expected - set(order))} of {len(expected)} alarms "
                                 f"never arrived within {timeout:g}s")
        try:
            msg = sub.messages.get(timeout=left)
        except queue.Empty:
            continue
        order.append(Alarm.from_json(bytes(msg.payload)).event_id)
    return order


def first_arrivals(order: list[str]) -> list[str]:
    return list(dict.fromkeys(order))


def make_durable(broker: MosquittoBroker) -> None:
    """Let the broker survive SIGKILL: save its state (sessions, subscriptions, queued
    messages) after every change instead of only on a clean shutdown."""
    broker.stop()
    with broker.config.open("a") as conf:
        conf.write("autosave_interval 1\nautosave_on_changes true\n")
    broker.start()


def freeze(broker: MosquittoBroker) -> None:
    """SIGSTOP the broker and wait until it is stopped: it reads nothing, acknowledges nothing."""
    assert broker.proc is not None
    pid = broker.proc.pid
    os.kill(pid, signal.SIGSTOP)

    def stopped() -> bool:  # the one-letter state in /proc/<pid>/stat, T: stopped
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"

    wait_until(stopped, what="broker frozen by SIGSTOP")


def test_outbox_sink_forgets_acknowledged_alarms(
        mqtt_broker: tuple[str, int], subscribers: list[Subscriber], tmp_path: Path) -> None:
    host, port = mqtt_broker
    path = tmp_path / "outbox.db"
    sink = MqttSink(host, port, edge_id=unique("edge"), site=unique("site"), outbox=path,
                    connect_timeout_s=TIMEOUT, publish_timeout_s=TIMEOUT)
    sub = Subscriber(host, port, f"perimeter/v2/{sink.site}/alarm/#")
    subscribers.append(sub)
    sink.open()
    try:
        alarms = [make_alarm(i) for i in range(10)]
        for alarm in alarms:
            sink.emit(alarm)
        order = collect_event_ids(sub, {a.event_id for a in alarms}, timeout=TIMEOUT)
        assert first_arrivals(order) == [a.event_id for a in alarms]
        assert sink.flush(), f"pending {sink.pending}, backlog {sink.backlog}"
        assert (sink.published, sink.pending, sink.backlog) == (10, 0, 0)
    finally:
        sink.close()
        clean_up(host, port, sink.status_topic, sink.client_id)
    with Outbox(path) as box:
        assert len(box) == 0


def test_close_keeps_unacknowledged_alarms_in_the_outbox(
        mosquitto_private: MosquittoBroker, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    host, port = mosquitto_private.address
    path = tmp_path / "outbox.db"
    sink = MqttSink(host, port, edge_id="edge-close", outbox=path, connect_timeout_s=TIMEOUT,
                    publish_timeout_s=0.3)
    sink.open()
    mosquitto_private.stop()
    wait_until(lambda: not sink.connected, what="sink to notice the broker is gone")
    alarms = [make_alarm(i) for i in range(3)]
    for alarm in alarms:
        sink.emit(alarm)
    assert (sink.pending, sink.backlog) == (0, 3)  # link down: stored, not handed to paho
    with caplog.at_level(logging.WARNING, logger="edge.uplink"):
        sink.close()
    assert any("kept in the outbox" in r.message for r in caplog.records)
    with Outbox(path) as box:
        assert [e.event_id for e in box.pending()] == [a.event_id for a in alarms]
        assert [e.payload for e in box.pending()] == [a.to_json().encode() for a in alarms]


def test_broker_killed_and_restarted_mid_stream_no_alarm_lost(
        mosquitto_private: MosquittoBroker, subscribers: list[Subscriber],
        tmp_path: Path) -> None:
    """Broker killed and restarted mid-stream: no alarm lost (edge outbox on disk plus QoS 1).

    The broker is frozen (SIGSTOP) after alarm 59, so alarms 60-79 reach its socket but are
    never acknowledged; then it is SIGKILLed with them in flight. Alarms 80-139 are emitted
    while it is dead, and it restarts before alarm 140 while the sink is still reconnecting.
    The edge must resend every alarm the broker never acknowledged (paho resends what it holds,
    the outbox replay sends what was stored while the link was down) and all 200 reach a
    persistent QoS 1 subscriber. What the broker had acknowledged before the kill is its own
    durability, outside the edge's guarantee: so the stream waits until the subscriber has
    alarms 0-59 before freezing the broker, and the broker autosaves on every change (as a
    production broker should), so the subscriber's session survives the SIGKILL and it gets
    what is published while it reconnects.
    """
    broker = mosquitto_private
    make_durable(broker)
    host, port = broker.address
    sub = Subscriber(host, port, ALARM_FILTER, client_id=unique("fault-sub"),
                     clean_session=False)
    subscribers.append(sub)
    sink = MqttSink(host, port, edge_id="edge-fault", site="park",
                    outbox=tmp_path / "outbox.db", connect_timeout_s=TIMEOUT,
                    publish_timeout_s=TIMEOUT)
    sink.open()
    alarms = [make_alarm(i, zone=f"zone-{i % 7}") for i in range(200)]
    order: list[str] = []
    try:
        for i, alarm in enumerate(alarms):
            if i == 60:
                collect_event_ids(sub, {a.event_id for a in alarms[:60]}, TIMEOUT, order)
                freeze(broker)
            elif i == 80:
                assert sink.pending >= 20, "alarms 60-79 should be unacknowledged"
                broker.kill()
            elif i == 140:
                broker.start()
            sink.emit(alarm)
        collect_event_ids(sub, {a.event_id for a in alarms}, 30.0, order)
        assert sink.flush(TIMEOUT), f"pending {sink.pending}, backlog {sink.backlog}"
        assert (sink.published, sink.pending, sink.backlog) == (200, 0, 0)
        assert len(set(order)) == 200  # duplicates allowed, losses not
    finally:
        sink.close()


CRASHING_EDGE = """
import sys
from pathlib import Path

from edge.uplink.sink import MqttSink
from tests.support.alarms import numbered as make_alarm
from tests.support.waiting import wait_until

host, port, outbox = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
sink = MqttSink(host, port, edge_id="edge-crash", site="park", outbox=outbox)
sink.open()
print("open", flush=True)
sys.stdin.readline()  # the test stops the broker
wait_until(lambda: not sink.connected, what="broker gone")
for i in range(20):
    sink.emit(make_alarm(i, zone=f"crash-{i}"))
print("emitted", sink.backlog, sink.pending, flush=True)
sys.stdin.readline()  # SIGKILLed while waiting here: no close(), no flush
"""


def read_line(stream: IO[str], timeout: float = TIMEOUT) -> str:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout).strip()
    except queue.Empty:
        raise AssertionError(f"no line from the edge process within {timeout:g}s") from None


def test_edge_process_killed_alarms_sent_first_after_restart(
        mosquitto_private: MosquittoBroker, subscribers: list[Subscriber], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An edge process emits 20 alarms while the broker is down and is SIGKILLed: the next
    process with the same outbox sends them first, in order, before its own alarms."""
    host, port = mosquitto_private.address
    path = tmp_path / "outbox.db"
    errors = tmp_path / "edge-a.stderr"
    with errors.open("w") as err:
        edge_a = subprocess.Popen(
            [sys.executable, "-c", CRASHING_EDGE, host, str(port), str(path)], cwd=REPO_ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert edge_a.stdin is not None and edge_a.stdout is not None
        assert read_line(edge_a.stdout) == "open", errors.read_text()
        mosquitto_private.stop()
        edge_a.stdin.write("go\n")
        edge_a.stdin.flush()
        assert read_line(edge_a.stdout) == "emitted 20 0", errors.read_text()
        edge_a.kill()  # the process dies: paho's memory is gone, the outbox is not
        edge_a.wait(TIMEOUT)
    finally:
        if edge_a.poll() is None:
            edge_a.kill()
            edge_a.wait(TIMEOUT)
    with Outbox(path) as box:
        assert len(box) == 20

    mosquitto_private.start()
    sub = Subscriber(host, port, ALARM_FILTER)
    subscribers.append(sub)
    monkeypatch.setattr(edge.uplink.backlog, "REPLAY_WINDOW", 7)  # 20 stored: several windows
    edge_b = MqttSink(host, port, edge_id="edge-crash", site="park", outbox=path,
                      connect_timeout_s=TIMEOUT, publish_timeout_s=TIMEOUT)
    edge_b.open()
    try:
        new = make_alarm(20, zone="after-restart")
        edge_b.emit(new)
        left = [make_alarm(i, zone=f"crash-{i}") for i in range(20)]
        expected = [a.event_id for a in [*left, new]]
        order = collect_event_ids(sub, set(expected), timeout=TIMEOUT)
        assert first_arrivals(order) == expected  # the earlier run's alarms first, in order
        assert edge_b.flush(), f"pending {edge_b.pending}, backlog {edge_b.backlog}"
        assert (edge_b.published, edge_b.pending, edge_b.backlog) == (21, 0, 0)
    finally:
        edge_b.close()


def test_open_fails_clearly_without_broker() -> None:
    port = free_port()
    sink = MqttSink("127.0.0.1", port, edge_id="edge-nobroker", connect_timeout_s=0.5)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        sink.open()
    assert time.monotonic() - start < 3.0
    with pytest.raises(RuntimeError, match="not opened"):
        sink.emit(make_alarm(1))


@pytest.mark.parametrize("kwargs", [
    {"edge_id": "edge#1"}, {"edge_id": "edge+1"}, {"edge_id": "a/b"}, {"edge_id": ""},
    {"edge_id": "ok", "site": "north/gate"}, {"edge_id": "ok", "site": "#"},
])
def test_invalid_topic_ids_rejected(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"MQTT"):
        MqttSink(**kwargs)  # type: ignore[arg-type]


def test_an_edge_can_start_while_the_broker_is_unreachable(
        mosquitto_private: MosquittoBroker, subscribers: list[Subscriber],
        tmp_path: Path) -> None:
    """A 24/7 worker booting while the uplink is down starts anyway; its alarms wait in the
    outbox and arrive once the broker answers."""
    host, port = mosquitto_private.address
    # A persistent subscriber (the broker keeps its session across the restart): nothing
    # the edge sends after the broker returns can slip past it.
    sub = Subscriber(host, port, ALARM_FILTER, client_id=unique("boot-sub"),
                     clean_session=False)
    subscribers.append(sub)
    mosquitto_private.stop()
    sink = MqttSink(host, port, edge_id="edge-boot", site="park", outbox=tmp_path / "o.db",
                    connect_timeout_s=0.5, publish_timeout_s=TIMEOUT, require_connection=False)
    sink.open()
    try:
        alarms = [make_alarm(i, zone="boot") for i in range(3)]
        for a in alarms:
            sink.emit(a)
        assert sink.backlog == 3
        mosquitto_private.start()
        got = collect_event_ids(sub, {a.event_id for a in alarms}, timeout=TIMEOUT)
        assert set(got) >= {a.event_id for a in alarms}
        assert sink.flush()
    finally:
        sink.close()
