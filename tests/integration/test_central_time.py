"""Time sanity and the site registry with the whole central on real Mosquitto and Redis
(issue 10, rows 2, 3, 4 and 7): incident timing runs on the central's clock at arrival, the
alarm's own time is only evidence; a late alarm is recorded without sounding a loudspeaker;
the edges learn how far their clocks are off; made-up sites, cameras and zones go nowhere."""

from __future__ import annotations

import json
import math
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from central.config import CentralConfig
from central.intake.mqtt import Incoming
from central.runtime import Central
from edge.uplink.sink import MqttSink
from tests.support.alarms import alarm
from tests.support.api import accounts, call, serving
from tests.support.central import registry
from tests.support.waiting import wait_until
from wire import messages, topics
from wire.client import Broker

YEAR = 365 * 86400.0


def config(notify_topic: str, **central: Any) -> CentralConfig:
    return CentralConfig.model_validate({
        "central": {"ack_timeout_s": {"high": 30.0}, "escalation_repeat_s": 60.0,
                    "clock": {"late_s": 60, "past_s": 86400, "future_s": 300,
                              "publish_s": 1}, **central},
        "speakers": [{"id": "spk-bank", "zones": ["bank"]}],
        "notifiers": [{"id": "duty", "kind": "mqtt", "topic": notify_topic}],
        "plans": [{"name": "water", "cooldown_s": 0,
                   "first": {"speak": {"text": "水深危险，请勿靠近！"}, "notify": ["duty"]},
                   "escalation": [{"speak": {"text": "请立即离开！", "priority": 9},
                                   "notify": ["duty"]}]}],
    })


class Listener:
    """Subscribes to topics and queues what arrives (speaker commands, notifications)."""

    def __init__(self, host: str, port: int, client_id: str, *filters: str):
        self.got: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_message = lambda _c, _u, m: self.got.put(
            (m.topic, json.loads(m.payload) if m.payload else {}))
        self.client.connect(host, port)
        for f in filters:
            self.client.subscribe(f, qos=1)
        self.client.loop_start()

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        while not self.got.empty():
            out.append(self.got.get_nowait())
        return out

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Site:
    central: Central
    site: str
    commands: Listener
    notes: Listener
    edge: MqttSink

    def emit(self, t: float, *, track: int = 1, zone: str = "bank") -> None:
        self.edge.emit(alarm(zone, t, camera="c1", track=track))
        assert self.edge.flush()

    def incidents(self) -> list[dict[str, Any]]:
        return self.central.ops.incidents()

    def speaker_commands(self) -> int:
        return self.central.commands_sent


@pytest.fixture
def park(mqtt_broker: tuple[str, int], redis_url: str, redis_ns: str) -> Iterator[Site]:
    host, port = mqtt_broker
    site = redis_ns.replace(":", "-")[-30:]
    notify = f"t/{site}/duty"
    central = Central(config(notify, merge_window_s=120), redis_url, Broker(host, port),
                      ns=redis_ns, client_id=f"c-{site}",
                      registry=registry(site, ["bank", "cliff"], ["c1", "c2"]))
    central.intake.topic = topics.alarm_filter(site)
    commands = Listener(host, port, f"spk-{site}", f"{topics.PREFIX}/{site}/speaker/+/command")
    notes = Listener(host, port, f"gov-{site}", notify)
    central.start()
    edge = MqttSink(host, port, edge_id="edge-1", site=site)
    edge.open()
    try:
        yield Site(central, site, commands, notes, edge)
    finally:
        edge.close()
        central.stop()
        commands.close()
        notes.close()


def test_a_future_dated_alarm_does_not_capture_its_zone(park: Site) -> None:
    """Row 2: an edge clock ten years ahead opens an incident at its arrival (and speaks: the
    person is there now); once the merge window passed, a real alarm opens its own incident
    and speaks again, and the first one escalates when nobody acknowledges it."""
    now = park.central.clock()
    park.emit(now + 10 * YEAR)
    wait_until(lambda: len(park.incidents()) == 1, 10, "the incident")
    (first,) = park.incidents()
    assert first["opened_at"] <= park.central.clock() and first["last_activity"] <= now + 60
    assert next(iter(first["alarms"].values()))["time_flag"] == "future"
    assert park.central.aggregator.counts["time:future"] == 1
    wait_until(lambda: park.speaker_commands() == 1, 10, "its warning")
    # A real alarm arriving after the merge window (its arrival stamped 200 s on, through
    # the same partition stream the MQTT intake writes).
    real = alarm("bank", now + 200, camera="c1", track=2)
    park.central.stream_intake.many([Incoming(real.to_json().encode(), topics.alarm(
        park.site, "c1", "bank", "intrusion"), now + 200)])
    wait_until(lambda: len(park.incidents()) == 2, 10, "a second incident")
    wait_until(lambda: park.speaker_commands() == 2, 10, "the second warning")
    with park.central.aggregator.lock:
        due = park.central.aggregator.book.due_escalations(now + 31, {"high": 30.0}, 60.0)
    assert first["id"] in {i.id for i in due}, "the future-dated incident must escalate"


def test_a_past_dated_alarm_does_not_escalate_every_second(park: Site) -> None:
    """Row 3: ``time: 1.0`` used to reach escalation level 12 in 12 s. Timing runs from its
    arrival now; it is late, so it is recorded and notified, and no loudspeaker speaks."""
    park.emit(1.0)
    wait_until(lambda: len(park.incidents()) == 1, 10, "the incident")
    now = park.central.clock()
    for s in range(1, 13):
        park.central.tick(now + s)
    (inc,) = park.incidents()
    assert inc["escalation_level"] == 0 and inc["late"] is True
    park.central.tick(now + 31)
    wait_until(lambda: park.incidents()[0]["escalation_level"] == 1, 5, "one escalation")
    assert park.speaker_commands() == 0
    assert park.central.aggregator.counts["time:past"] == 1


def test_a_late_alarm_is_recorded_and_notified_without_a_loudspeaker(park: Site) -> None:
    """An edge's outbox emptying after a 10-minute outage: the incident is opened for the
    record and the duty officer is told, but nobody is warned who left long ago. A timely
    alarm in the same incident then sounds the warning."""
    now = park.central.clock()
    park.emit(now - 600)
    _, note = park.notes.got.get(timeout=10)
    assert note["late"] is True and note["zone"] == "bank"
    assert park.speaker_commands() == 0 and park.commands.drain() == []
    park.emit(park.central.clock(), track=2)
    topic, cmd = park.commands.got.get(timeout=10)
    assert topic.endswith("/speaker/spk-bank/command") and cmd["text"] == "水深危险，请勿靠近！"
    wait_until(lambda: len(park.incidents()[0]["alarms"]) == 2, 10, "both alarms stored")
    (inc,) = park.incidents()
    assert inc["late"] is False


def test_absurd_times_are_refused_and_stats_never_fail(park: Site) -> None:
    """Row 7: ``time: 1e300`` and NaN are refused at the gate; incidents stored with such
    times by an older version no longer make ``/stats`` (or ``/incidents``) fail."""
    a = json.loads(alarm("bank", time.time(), camera="c1").to_json())
    tp = topics.alarm(park.site, "c1", "bank", "intrusion")
    broker = park.central.broker
    pub = Listener(broker.host, broker.port, f"bad-{park.site}")
    for literal in ("1e300", "NaN"):
        body = json.dumps({**a, "time": "@@"}).encode().replace(b'"@@"', literal.encode())
        pub.client.publish(tp, body, qos=1).wait_for_publish(5)
    pub.close()
    wait_until(lambda: park.central.aggregator.counts["rejected:invalid"] == 2, 10,
               "both refused")
    assert park.incidents() == []
    r, key = park.central.redis, park.central.store.incidents_key
    legacy = {"id": "old-1", "site": park.site, "group": "bank", "zone": "bank",
              "zone_kind": "water", "risk": "high", "severity": "critical",
              "status": "raised", "opened_at": 1e300, "last_activity": math.nan,
              "alarms": {}, "cameras": [], "sources": [], "kinds": []}
    r.hset(key, "old-1", json.dumps(legacy))
    r.hset(key, "old-2", json.dumps({**legacy, "id": "old-2", "opened_at": math.nan}))
    from central.api import create_app

    guard = accounts(park.central.redis, park.central.store.ns)
    with serving(create_app(park.central.aggregator, guard, ops=park.central.ops)) as api:
        status, stats = call(f"{api}/stats?days=366")
        assert status == 200 and stats["per_zone_day"] == []
        status, items = call(f"{api}/incidents")
        assert status == 200 and {i["id"] for i in items} == {"old-1", "old-2"}


def test_edges_learn_their_clock_offset_from_the_central(park: Site) -> None:
    """The central publishes its clock; each edge measures its offset, reports it in its
    retained status and to its metric, and a box whose clock is wrong shows it."""
    session = park.edge.session
    seen: list[float] = []
    session.on_clock = seen.append
    wait_until(lambda: session.clock_offset_s is not None, 10, "a first measurement")
    assert abs(session.clock_offset_s or 0.0) < 1.0  # one machine: the same clock
    broker = park.central.broker
    status = Listener(broker.host, broker.port, f"ops-{park.site}", session.status_topic)
    try:
        _, online = status.got.get(timeout=10)  # retained: the last one published
        assert online["state"] == "online" and abs(online["clock_offset_s"]) < 1.0
        # The central's clock as a box 30 s ahead of it would see it.
        tick = messages.central_clock(time.time() - 30, "w-test")
        status.client.publish(topics.central_clock(park.site), tick, qos=0).wait_for_publish(5)
        wait_until(lambda: any(abs(s - 30) < 1.0 for s in seen), 10, "the offset measured")
        _, ahead = status.got.get(timeout=10)
        assert abs(ahead["clock_offset_s"] - 30) < 1.0 and ahead["clock_rtt_s"] >= 0
    finally:
        status.close()


def test_made_up_sites_cameras_and_zones_go_nowhere(
        mosquitto_private: Any, redis_url: str, redis_ns: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Row 4: an anonymous client publishing a made-up site, a made-up camera, a topic that
    disagrees with its payload: each refused and counted, no incident, no loudspeaker, no
    webhook in the outbox. The real edge's alarm still goes through."""
    host, port = mosquitto_private.address
    cfg = CentralConfig.model_validate({
        "central": {"ack_timeout_s": {"high": 3600.0}},
        "speakers": [{"id": "spk-bank", "zones": ["river-bank"]}],
        "notifiers": [{"id": "gov", "kind": "webhook", "url": "http://127.0.0.1:9/x",
                       "secret_env": "TEST_TRUST_SECRET"}],
        "plans": [{"name": "all", "first": {"speak": {"text": "危险"}, "notify": ["gov"]}}]})
    monkeypatch.setenv("TEST_TRUST_SECRET", "s3cret")
    central = Central(cfg, redis_url, Broker(host, port), ns=redis_ns, client_id="c-row4",
                      registry=registry("real-park", ["river-bank"], ["cam-1"]))
    central.start()
    pub = Listener(host, port, "anonymous")
    try:
        good = alarm("river-bank", time.time(), camera="cam-1")
        forged = [
            (topics.alarm("fake-site", "cam-1", "river-bank", "intrusion"), good),
            (topics.alarm("real-park", "cam-9", "river-bank", "intrusion"),
             alarm("river-bank", time.time(), camera="cam-9")),
            (f"{topics.PREFIX}/real-park/alarm/topic-cam/topic-zone/crowd_density", good),
        ]
        for tp, a in forged:
            pub.client.publish(tp, a.to_json(), qos=1).wait_for_publish(5)
        counts = central.aggregator.counts
        wait_until(lambda: sum(v for k, v in counts.items() if k.startswith("rejected")) == 3,
                   10, "three refusals")
        assert {k: v for k, v in counts.items() if k.startswith("rejected")} == {
            "rejected:unknown_site": 1, "rejected:unknown_camera": 1,
            "rejected:topic_mismatch": 1}
        assert central.ops.incidents() == [] and central.commands_sent == 0
        outbox = central.notifiers["gov"]
        assert outbox.backlog() == 0  # type: ignore[union-attr]
        pub.client.publish(topics.alarm("real-park", "cam-1", "river-bank", "intrusion"),
                           good.to_json(), qos=1).wait_for_publish(5)
        wait_until(lambda: len(central.ops.incidents()) == 1, 10, "the real one")
        assert central.ops.incidents()[0]["zone"] == "river-bank"
        wait_until(lambda: central.commands_sent == 1, 10, "its warning")
        wait_until(lambda: outbox.backlog() == 1, 10, "its notification")  # type: ignore[union-attr]
    finally:
        pub.close()
        central.stop()
