"""Response plans: matching, speaker cooldown and priority, escalation steps, payloads."""

from __future__ import annotations

import pytest

from central.config import CentralConfig
from central.incidents.book import IncidentBook
from central.plans import Notification, Planner, SpeakerCommand
from tests.support.alarms import alarm
from zones.alarm import AlarmKind
from zones.geometry import Risk

CONFIG = CentralConfig.model_validate({
    "speakers": [{"id": "spk-bank", "zones": ["bank"]}, {"id": "spk-gate", "zones": ["gate"]}],
    "notifiers": [{"id": "gov", "kind": "webhook", "url": "http://127.0.0.1:1/x"},
                  {"id": "duty", "kind": "mqtt", "topic": "duty/alarms"}],
    "plans": [
        {"name": "water-high", "zone_kinds": ["water"], "risks": ["high"],
         "first": {"speak": {"text": "水深危险，请勿靠近！", "priority": 5}, "notify": ["gov"]},
         "cooldown_s": 30,
         "escalation": [{"notify": ["duty"]},
                        {"speak": {"text": "请立即离开！", "priority": 9}, "notify": ["duty"]}]},
        {"name": "any", "first": {"notify": ["gov"]}},
    ],
    "modes": {"typhoon": [{"name": "typhoon", "first": {
        "speak": {"text": "台风天气，请离开水边！", "priority": 8}, "notify": ["gov", "duty"]}}]},
})


def incident(zone: str = "bank", risk: Risk = Risk.HIGH, t: float = 0.0, iid: str = "i1",
             site: str = "park"):
    book = IncidentBook()
    res = book.apply(alarm(zone, t, risk=risk), site, iid, arrived=t)
    assert res is not None
    return res.incident


def kinds(effects: list) -> list[tuple[str, str]]:
    return [("speak", e.speaker) if isinstance(e, SpeakerCommand) else ("notify", e.notifier)
            for e in effects]


def test_first_step_speaks_near_the_zone_and_notifies() -> None:
    effects = Planner(CONFIG).on_incident(incident(), now=0)
    assert kinds(effects) == [("speak", "spk-bank"), ("notify", "gov")]
    note = effects[1]
    assert isinstance(note, Notification)
    assert note.payload["gb28181_alarm_types"] == [6] and note.payload["zone"] == "bank"


def test_fallback_plan_for_other_risks() -> None:
    assert kinds(Planner(CONFIG).on_incident(incident(risk=Risk.LOW), 0)) == [("notify", "gov")]


def test_cooldown_and_priority() -> None:
    p = Planner(CONFIG)
    p.on_incident(incident(iid="a"), now=0)
    # Within the cooldown the same priority does not speak again; notifications still go.
    assert kinds(p.on_incident(incident(iid="b"), now=10)) == [("notify", "gov")]
    assert kinds(p.on_incident(incident(iid="c"), now=31)) == [("speak", "spk-bank"),
                                                              ("notify", "gov")]
    inc = incident(iid="d")
    inc.escalation_level = 2  # priority 9 speaks through the cooldown
    assert kinds(p.on_escalation(inc, now=32)) == [("speak", "spk-bank"), ("notify", "duty")]


def test_a_made_up_site_does_not_silence_a_real_sites_speaker() -> None:
    """The cooldown is per site and speaker: an incident of another (or a forged) site that
    uses the same speaker id must not keep the real site's speaker quiet."""
    p = Planner(CONFIG)
    fake = p.on_incident(incident(site="fake-site", iid="f1"), 0.0)
    assert ("speak", "spk-bank") in kinds(fake)
    real = p.on_incident(incident(site="park", t=1.0, iid="r1"), 1.0)
    assert ("speak", "spk-bank") in kinds(real)
    again = p.on_incident(incident(site="park", t=2.0, iid="r2"), 2.0)
    assert ("speak", "spk-bank") not in kinds(again)  # the real site's own cooldown holds


@pytest.mark.parametrize(("level", "expected"), [
    (1, [("notify", "duty")]),
    (2, [("speak", "spk-bank"), ("notify", "duty")]),
    (5, [("speak", "spk-bank"), ("notify", "duty")]),  # the last step repeats
])
def test_escalation_steps(level: int, expected: list) -> None:
    inc = incident()
    inc.escalation_level = level
    assert kinds(Planner(CONFIG).on_escalation(inc, now=100)) == expected


def test_emergency_mode_switches_plan_set() -> None:
    p = Planner(CONFIG)
    p.set_mode("typhoon")
    assert kinds(p.on_incident(incident(), 0)) == [("speak", "spk-bank"), ("notify", "gov"),
                                                  ("notify", "duty")]
    with pytest.raises(KeyError, match="flood"):
        p.set_mode("flood")
    p.set_mode(None)
    assert p.plan_for(incident()).name == "water-high"  # type: ignore[union-attr]


def test_config_rejects_unknown_references() -> None:
    with pytest.raises(ValueError, match="unknown notifier 'nobody'"):
        CentralConfig.model_validate({"plans": [{"name": "x", "first": {"notify": ["nobody"]}}]})


def test_alarm_kind_filter() -> None:
    cfg = CentralConfig.model_validate({
        "notifiers": [{"id": "gov", "kind": "mqtt", "topic": "t"}],
        "plans": [{"name": "crowd", "alarm_kinds": ["crowd_density"],
                   "first": {"notify": ["gov"]}}]})
    assert Planner(cfg).on_incident(incident(), 0) == []
    assert AlarmKind.INTRUSION.value in incident().kinds


def late_incident(iid: str = "late-1"):
    book = IncidentBook()
    res = book.apply(alarm("bank", 0.0), "park", iid, arrived=1_700_000_000.0)
    assert res is not None and res.incident.late
    return res.incident


def test_a_late_incident_notifies_but_does_not_speak_by_default() -> None:
    p = Planner(CONFIG)
    inc = late_incident()
    assert kinds(p.on_incident(inc, now=0)) == [("notify", "gov")]
    note = p.on_incident(inc, now=0)[0]
    assert isinstance(note, Notification) and note.payload["late"] is True
    inc.escalation_level = 2
    assert kinds(p.on_escalation(inc, now=100)) == [("notify", "duty")]


def test_a_plan_may_let_late_incidents_speak_or_stay_silent() -> None:
    raw = CONFIG.model_dump()
    raw["plans"][0]["late"] = {"speak": True, "notify": False}
    assert kinds(Planner(CentralConfig.model_validate(raw)).on_incident(
        late_incident(), now=0)) == [("speak", "spk-bank")]
