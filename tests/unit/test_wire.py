"""The wire contract: every topic as subscribers see it, parsed back, and ids refused or made
safe; the status payloads' shape."""

from __future__ import annotations

import json

import pytest

from wire import messages, topics
from wire.client import Broker

TOPICS = [
    (topics.alarm("park", "cam-1", "bank", "intrusion"),
     "perimeter/v1/park/alarm/cam-1/bank/intrusion"),
    (topics.alarm("park", "gate/1+#", "", "dwell"), "perimeter/v1/park/alarm/gate_1__/_/dwell"),
    (topics.alarm("park", "cam-1", "bank", "intrusion", edge="edge-1"),
     "perimeter/v2/park/alarm/edge-1/cam-1/bank/intrusion"),
    (topics.alarm_filter(), "perimeter/+/+/alarm/#"),
    (topics.alarm_filter("park"), "perimeter/+/park/alarm/#"),
    (topics.alarm_filter(share_group="central"), "$share/central/perimeter/+/+/alarm/#"),
    (topics.edge_status("park", "edge-1"), "perimeter/v1/park/edge/edge-1/status"),
    (topics.camera_status("park", "edge-1", "cam/2"),
     "perimeter/v1/park/edge/edge-1/camera/cam_2/status"),
    (topics.radar_tracks("park", "r1"), "perimeter/v1/park/radar/r1/tracks"),
    (topics.speaker_command("s", "spk-1"), "perimeter/v1/s/speaker/spk-1/command"),
    (topics.speaker_status("s", "spk-1"), "perimeter/v1/s/speaker/spk-1/status"),
    (topics.speaker_availability("s", "spk-1"), "perimeter/v1/s/speaker/spk-1/availability"),
    (topics.speaker_status_filter(), "perimeter/v1/+/speaker/+/status"),
    (topics.speaker_status_filter("s"), "perimeter/v1/s/speaker/+/status"),
]


@pytest.mark.parametrize(("built", "expected"), TOPICS)
def test_topics_are_spelled_as_documented(built: str, expected: str) -> None:
    assert built == expected


@pytest.mark.parametrize("bad", ["a/b", "+", "#", "", "x\x00"])
@pytest.mark.parametrize("build", [
    lambda v: topics.alarm(v, "c", "z", "intrusion"), lambda v: topics.edge_status("s", v),
    lambda v: topics.alarm("s", "c", "z", "intrusion", edge=v),
    lambda v: topics.radar_tracks(v, "r"), lambda v: topics.speaker_command("s", v),
    lambda v: topics.alarm_filter(share_group=v or "#"),
])
def test_configured_ids_that_break_a_topic_are_refused(bad: str, build: object) -> None:
    with pytest.raises(ValueError, match="MQTT topic segment"):
        build(bad)  # type: ignore[operator]


@pytest.mark.parametrize(("topic", "parts"), [
    ("perimeter/v1/park/alarm/cam-1/bank/intrusion",
     ("park", "cam-1", "bank", "intrusion", None)),
    ("perimeter/v2/park/alarm/edge-1/cam-1/bank/intrusion",
     ("park", "cam-1", "bank", "intrusion", "edge-1")),
    ("perimeter/v1/park/alarm/cam-1/bank", None),
    ("perimeter/v1/park/status/cam-1/bank/intrusion", None),
    ("perimeter/v1/park/alarm//bank/intrusion", None),
    ("perimeter/v2/park/alarm/cam-1/bank/intrusion", None),  # v2 without its edge segment
    ("perimeter/v2/park/alarm//cam-1/bank/intrusion", None),
    ("perimeter/v1/park/alarm/edge-1/cam-1/bank/intrusion", None),
    ("perimeter/v3/park/alarm/edge-1/cam-1/bank/intrusion", None),
    ("other/park/alarm/cam-1/bank/intrusion", None),
])
def test_alarm_topics_parse_back(topic: str, parts: tuple[str | None, ...] | None) -> None:
    got = topics.parse_alarm(topic)
    assert (None if got is None else (got.site, got.camera, got.zone, got.kind, got.edge)
            ) == parts


def test_status_payloads() -> None:
    edge = json.loads(messages.edge_status("online", "edge-1", at=5.0))
    assert edge == {"state": "online", "edge_id": "edge-1", "time": 5.0}
    cam = json.loads(messages.camera_status("degraded", "cam-1", "edge-1", "late", at=6.0))
    assert cam == {"state": "degraded", "camera": "cam-1", "edge_id": "edge-1",
                   "reason": "late", "time": 6.0}
    assert messages.status_state(messages.edge_status("offline", "e").encode()) == "offline"
    assert messages.status_state(b"{not json") is None
    assert messages.status_state(b'["online"]') is None


@pytest.mark.parametrize(("address", "host", "port"), [
    ("10.0.0.5:8883", "10.0.0.5", 8883), ("broker", "broker", 1883), (":1884", "127.0.0.1", 1884),
])
def test_broker_addresses(address: str, host: str, port: int) -> None:
    b = Broker.parse(address)
    assert (b.host, b.port, b.address) == (host, port, f"{host}:{port}")


@pytest.mark.parametrize("bad", ["h:0", "h:70000", "h:x"])
def test_bad_broker_addresses_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        Broker.parse(bad)


@pytest.mark.parametrize(("role", "name", "access", "topic", "granted"), [
    ("edge", "edge-1", "write", topics.alarm("park", "c1", "bank", "intrusion", edge="edge-1"),
     True),
    ("edge", "edge-1", "read", topics.central_clock("park"), True),
    ("edge", "edge-1", "write", topics.speaker_command("park", "spk-1"), False),
    ("speaker", "spk-1", "read", topics.speaker_command("park", "spk-1"), True),
    ("speaker", "spk-1", "read", topics.speaker_command("park", "spk-2"), False),
    ("central", "central", "write", topics.central_clock("park"), True),
    ("central", "central", "write", topics.speaker_command("park", "spk-1"), True),
])
def test_roles_grant_their_topics_only(role: str, name: str, access: str, topic: str,
                                       granted: bool) -> None:
    """Each role's ACL lines, matched as Mosquitto matches them (+ one level, # the rest)."""
    def matches(pattern: str, t: str) -> bool:
        p, parts = pattern.split("/"), t.split("/")
        for i, seg in enumerate(p):
            if seg == "#":
                return True
            if i >= len(parts) or (seg != "+" and seg != parts[i]):
                return False
        return len(p) == len(parts)

    lines = topics.grants(role, None if role == "central" else "park", name)
    ok = any(matches(pattern, topic) for mode, pattern in lines
             if mode in (access, "readwrite"))
    assert ok is granted, lines
