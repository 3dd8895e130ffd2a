"""The central's gate on plain values: every hostile message is refused alone, by reason, and
nothing in a message can make the gate raise (rows 1, 4, 7 and 11 of issue 10)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from central.intake.validate import MAX_PAYLOAD, Admitted, AlarmGate
from tests.support.alarms import alarm
from tests.support.central import registry
from wire import topics
from zones.alarm import Alarm

SITE = "park"
NOW = 1_700_000_000.0


def good() -> dict[str, Any]:
    return json.loads(alarm("bank", NOW, camera="cam1").to_json())


def topic(camera: str = "cam1", zone: str = "bank", kind: str = "intrusion",
          site: str = SITE) -> str:
    return topics.alarm(site, camera, zone, kind)


def dumps(d: dict[str, Any]) -> bytes:
    return json.dumps(d).encode()


def nested(depth: int) -> bytes:
    return b'{"schema": "perimeter.alarm/1", "evidence": ' + b"[" * depth + b"]" * depth + b"}"


def with_(**changes: Any) -> bytes:
    return dumps({**good(), **changes})


def raw_field(name: str, literal: str) -> bytes:
    """The good alarm with one field's JSON text replaced (NaN, huge numbers)."""
    d = good()
    d[name] = "@@"
    return dumps(d).replace(b'"@@"', literal.encode())


# (name, payload, topic, reason code)
HOSTILE: list[tuple[str, bytes, str, str]] = [
    ("integer of 5000 digits", raw_field("frame", "9" * 5000), topic(), "bad_json"),
    ("integer of 4000 digits", raw_field("frame", "9" * 4000), topic(), "invalid"),
    ("nesting 30000 deep", nested(30_000), topic(), "bad_json"),  # RecursionError
    ("nesting 500 deep", nested(500), topic(), "invalid"),
    ("bad UTF-8", b'{"schema": "perimeter.alarm/1", "zone": "\xff\xfe"}', topic(), "bad_json"),
    ("not an object", b"[1, 2, 3]", topic(), "bad_json"),
    ("empty", b"", topic(), "bad_json"),
    ("NaN time", raw_field("time", "NaN"), topic(), "invalid"),
    ("Infinity time", raw_field("time", "Infinity"), topic(), "invalid"),
    ("time 1e300", raw_field("time", "1e300"), topic(), "invalid"),
    ("negative time", with_(time=-5.0), topic(), "invalid"),
    ("NaN density", dumps({**good(), "evidence": {"density": "@@"}}).replace(
        b'"@@"', b"NaN"), topic(), "invalid"),
    ("frame past 2**53", with_(frame=2 ** 60), topic(), "invalid"),
    ("event_id not id:state", with_(event_id="someone-else:raised"), topic(), "invalid"),
    ("event_id of the other state", with_(event_id=good()["id"] + ":cleared"), topic(),
     "invalid"),
    ("wrong type", with_(frame="seven"), topic(), "invalid"),
    ("unknown field", with_(extra=1), topic(), "invalid"),
    ("huge string", with_(profile="x" * 60_000), topic(), "invalid"),
    ("over the size cap", with_(profile="x" * MAX_PAYLOAD), topic(), "too_large"),
    ("other schema", with_(schema="perimeter.alarm/9"), topic(), "bad_schema"),
    ("not an alarm topic", dumps(good()), f"perimeter/v1/{SITE}/edge/e1/status", "bad_topic"),
    ("topic too short", dumps(good()), f"perimeter/v1/{SITE}/alarm/cam1", "bad_topic"),
    ("topic camera is not the payload's", dumps(good()), topic(camera="topic-cam"),
     "topic_mismatch"),
    ("topic zone is not the payload's", dumps(good()), topic(zone="topic-zone"),
     "topic_mismatch"),
    ("topic kind is not the payload's", dumps(good()), topic(kind="crowd_density"),
     "topic_mismatch"),
    ("made-up site", dumps(good()), topic(site="nowhere"), "unknown_site"),
    ("made-up camera", with_(camera="ghost"), topic(camera="ghost"), "unknown_camera"),
    ("made-up zone", dumps(json.loads(alarm("moon", NOW).to_json())), topic(zone="moon"),
     "unknown_zone"),
]


@pytest.fixture
def gate() -> tuple[AlarmGate, list[tuple[bytes, str, str]]]:
    letters: list[tuple[bytes, str, str]] = []
    return (AlarmGate(lambda p, r, t: letters.append((p, r, t)),
                      registry=registry(SITE, ["bank", "cliff"], ["cam1", "cam2"])), letters)


@pytest.mark.parametrize(("name", "payload", "tp", "code"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_each_hostile_message_is_refused_by_reason(
        gate: tuple[AlarmGate, list[tuple[bytes, str, str]]], name: str, payload: bytes,
        tp: str, code: str) -> None:
    g, letters = gate
    assert g.admit(payload, tp) is None
    assert g.counts == {f"rejected:{code}": 1}
    ((kept, reason, where),) = letters
    assert kept == payload and where == tp and reason.split(":")[0] == code
    assert len(reason) <= 500


def test_a_good_alarm_passes_with_its_site(
        gate: tuple[AlarmGate, list[tuple[bytes, str, str]]]) -> None:
    g, letters = gate
    admitted = g.admit(dumps(good()), topic())
    assert isinstance(admitted, Admitted) and admitted.site == SITE
    assert admitted.alarm == Alarm.model_validate(good()) and not letters and not g.counts


def test_a_bug_tripped_by_one_message_refuses_it_alone(
        gate: tuple[AlarmGate, list[tuple[bytes, str, str]]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    g, letters = gate
    real: Callable[..., Any] = Alarm.model_validate

    def buggy(data: Any, *a: Any, **k: Any) -> Any:
        if data.get("camera") == "cam2":
            raise KeyError("a bug, not bad input")
        return real(data, *a, **k)

    monkeypatch.setattr(Alarm, "model_validate", buggy)
    assert g.admit(with_(camera="cam2"), topic(camera="cam2")) is None
    assert g.counts == {"rejected:error": 1} and letters[0][1] == "error: KeyError"
    assert g.admit(dumps(good()), topic()) is not None


def test_known_zones_still_refuse_other_zones_without_a_registry() -> None:
    g = AlarmGate(lambda *_: None, known_zones={"bank"})
    assert g.admit(dumps(good()), topic(site="anywhere")) is not None
    moon = dumps(json.loads(alarm("moon", NOW).to_json()))
    assert g.admit(moon, topic(zone="moon")) is None and g.counts == {"rejected:unknown_zone": 1}
