"""The whole aggregator with real Mosquitto and Redis: an edge alarm becomes an incident, a
speaker command and a signed webhook; an unanswered incident escalates; a restart of Redis
loses nothing."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from central.config import CentralConfig
from central.notify.request import verify_signature
from central.runtime import Central
from common.net import free_port
from edge.uplink.sink import MqttSink
from tests.support.alarms import alarm
from tests.support.central import registry
from tests.support.waiting import wait_until
from wire import topics
from wire.client import Broker

SECRET = "webhook-secret-for-tests"


class Receiver:
    """A governance-centre stand-in: checks signatures, records bodies by idempotency key."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bodies: queue.Queue[dict[str, Any]] = queue.Queue()
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = verify_signature(SECRET.encode(), self.headers["X-Perimeter-Timestamp"],
                                      self.headers["Idempotency-Key"], body,
                                      self.headers["X-Perimeter-Signature"])
                self.send_response(200 if ok else 401)
                self.end_headers()
                if ok:
                    received.put({"key": self.headers["Idempotency-Key"],
                                  **json.loads(body)})

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()




@pytest.fixture
def setup(mqtt_broker: tuple[str, int], redis_url: str, redis_ns: str,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Central, Receiver, str, Any]]:
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", SECRET)
    receiver = Receiver()
    site = redis_ns.replace(":", "-")[-30:]
    config = CentralConfig.model_validate({
        "central": {"ack_timeout_s": {"high": 1.0}, "escalation_repeat_s": 1.0},
        "speakers": [{"id": "spk-bank", "zones": ["bank"]}],
        "notifiers": [{"id": "gov", "kind": "webhook", "secret_env": "TEST_WEBHOOK_SECRET",
                       "url": f"http://127.0.0.1:{receiver.port}/alarms"}],
        "plans": [{"name": "water", "first": {"speak": {"text": "水深危险，请勿靠近！"},
                                              "notify": ["gov"]},
                   "escalation": [{"speak": {"text": "请立即离开！", "priority": 9},
                                   "notify": ["gov"]}]}],
    })
    host, port = mqtt_broker
    central = Central(config, redis_url, Broker(host, port), ns=redis_ns, client_id=f"c-{site}",
                      registry=registry(site, ["bank"], ["c1", "c2"], edge=f"e-{site}"))
    central.intake.topic = topics.alarm_filter(site)
    commands: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    spk = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"spk-{site}")
    spk.on_message = lambda _c, _u, m: commands.put((m.topic, json.loads(m.payload)))
    spk.connect(host, port)
    spk.subscribe(f"perimeter/v1/{site}/speaker/+/command", qos=1)
    spk.loop_start()
    central.start()
    try:
        yield central, receiver, site, commands
    finally:
        central.stop()
        spk.loop_stop()
        spk.disconnect()
        receiver.close()


def test_alarm_to_speaker_and_governance_then_escalation(setup: Any) -> None:
    central, receiver, site, commands = setup
    host, port = central.broker.host, central.broker.port
    sink = MqttSink(host, port, edge_id=f"e-{site}", site=site)
    sink.open()
    now = time.time()
    sink.emit(alarm("bank", now, camera="c1"))
    sink.emit(alarm("bank", now + 1, camera="c2", track=2))  # merged: no second warning
    sink.close()

    topic, cmd = commands.get(timeout=10)
    assert topic == f"perimeter/v1/{site}/speaker/spk-bank/command"
    assert cmd["text"] == "水深危险，请勿靠近！"
    first = receiver.bodies.get(timeout=10)
    assert first["zone"] == "bank" and first["gb28181_alarm_types"] == [6]
    wait_until(lambda: central.aggregator.counts["accepted"] == 2)
    (inc,) = central.aggregator.incidents()
    assert inc.cameras == {"c1", "c2"}

    # Nobody acknowledges within 1 s (and the speaker never answers): it escalates.
    topic, cmd = commands.get(timeout=10)
    assert cmd["text"] == "请立即离开！" and cmd["priority"] == 9
    second = receiver.bodies.get(timeout=10)
    assert second["escalation_level"] >= 1 and second["key"] != first["key"]
    central.aggregator.acknowledge(inc.id, "wang")
    types = [e["type"] for e in central.store.events(inc.id)]
    assert types[:2] == ["alarm", "speaker_command"] and "escalated" in types
    assert types[-1] == "acknowledged"


def test_an_ip_speaker_gets_its_command_by_http(mqtt_broker: tuple[str, int], redis_url: str,
                                                redis_ns: str) -> None:
    posts: queue.Queue[dict[str, Any]] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posts.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    site = redis_ns.replace(":", "-")[-30:]
    config = CentralConfig.model_validate({
        "speakers": [{"id": "ip-spk", "zones": ["bank"],
                      "http_url": f"http://127.0.0.1:{port}/play"}],
        "plans": [{"name": "water", "first": {"speak": {"text": "水深危险，请勿靠近！"}}}],
    })
    central = Central(config, redis_url, Broker(*mqtt_broker), ns=redis_ns,
                      client_id=f"h-{site}",
                      registry=registry(site, ["bank"], edge=f"e-{site}"))
    central.intake.topic = topics.alarm_filter(site)
    central.start()
    try:
        sink = MqttSink(*mqtt_broker, edge_id=f"e-{site}", site=site)
        sink.open()
        sink.emit(alarm("bank", time.time()))
        sink.close()
        cmd = posts.get(timeout=10)
        assert cmd["text"] == "水深危险，请勿靠近！" and cmd["incident"]
        (inc,) = central.aggregator.incidents()
        wait_until(lambda: any(e["type"] == "speaker_http" and e["data"]["delivered"]
                             for e in central.store.events(inc.id)))
    finally:
        central.stop()
        server.shutdown()
        server.server_close()


def test_playback_reports_close_the_loop_in_the_incident_log(setup: Any) -> None:
    from prometheus_client import CollectorRegistry

    from central.metrics import CentralMetrics
    from wire.messages import StatusMessage
    from wire.topics import speaker_status as status_topic

    central, _receiver, site, commands = setup
    metrics = CentralMetrics(CollectorRegistry())
    central.feedback._observe = (
        lambda spk, s: metrics.command_to_playback.labels(spk).observe(s))
    host, port = central.broker.host, central.broker.port
    sink = MqttSink(host, port, edge_id=f"e-{site}", site=site)
    sink.open()
    sink.emit(alarm("bank", time.time(), camera="c1"))
    sink.close()
    _topic, cmd = commands.get(timeout=10)
    # The speaker's report, as `perimeter speaker` sends it after playing the clip.
    spk = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"rep-{site}")
    spk.connect(host, port)
    spk.loop_start()
    report = StatusMessage(command_id=cmd["command_id"], speaker="spk-bank", state="done",
                           at=time.time())
    spk.publish(status_topic(site, "spk-bank"), report.to_bytes(), qos=1).wait_for_publish(5)
    spk.loop_stop()
    spk.disconnect()
    wait_until(lambda: central.feedback.reports == 1)
    (inc,) = central.aggregator.incidents()
    done = [e["data"] for e in central.store.events(inc.id) if e["type"] == "speaker_status"]
    assert done == [{"speaker": "spk-bank", "command_id": cmd["command_id"], "state": "done",
                     "reason": None}]
    hist = metrics.registry.get_sample_value(
        "perimeter_central_command_to_playback_seconds_count", {"speaker": "spk-bank"})
    assert hist == 1.0
