"""The incident book: merging alarms across sensors, idempotency, the closed loop."""

from __future__ import annotations

import pytest

from central.incidents.book import IncidentBook, LifecycleError, Status, TimePolicy, zone_groups
from tests.support.alarms import alarm
from zones.alarm import Alarm, AlarmState, Severity
from zones.geometry import Risk


def apply_all(book: IncidentBook, alarms: list[Alarm]) -> list[str]:
    ids = []
    for i, a in enumerate(alarms):
        res = book.apply(a, "park", incident_id=f"inc{i}", arrived=a.time)
        ids.append(res.incident.id if res else "-")
    return ids


MERGE_TABLE = [
    ("two cameras, same zone, within window: one incident",
     [alarm("bank", 0, camera="c1"), alarm("bank", 30, camera="c2", track=9)], ["inc0", "inc0"]),
    ("same zone after the window: a new incident",
     [alarm("bank", 0), alarm("bank", 200, track=2)], ["inc0", "inc1"]),
    ("activity keeps the window open", [alarm("bank", 0), alarm("bank", 100, track=2),
                                        alarm("bank", 190, track=3)], ["inc0", "inc0", "inc0"]),
    ("different zones: separate", [alarm("bank", 0), alarm("cliff", 1, track=2)],
     ["inc0", "inc1"]),
    ("neighbouring zones merge", [alarm("bank", 0), alarm("pier", 5, track=2)], ["inc0", "inc0"]),
    ("raise then clear: same incident, no new one",
     [alarm("bank", 0), alarm("bank", 9, state=AlarmState.CLEARED, first=0)], ["inc0", "inc0"]),
    ("clear of an unknown alarm opens nothing",
     [alarm("bank", 9, state=AlarmState.CLEARED, first=0)], ["-"]),
]


@pytest.mark.parametrize(("name", "alarms", "expected"), MERGE_TABLE,
                         ids=[r[0] for r in MERGE_TABLE])
def test_merge_table(name: str, alarms: list[Alarm], expected: list[str]) -> None:
    book = IncidentBook(merge_window_s=120, neighbours={"bank": ["pier"]})
    assert apply_all(book, alarms) == expected


def test_duplicates_are_harmless() -> None:
    book = IncidentBook()
    a = alarm("bank", 0)
    first = book.apply(a, "park", "inc0", arrived=0)
    again = book.apply(a, "park", "other", arrived=1)
    assert first and again and again.duplicate and again.incident.id == "inc0"
    assert len(book.incidents) == 1 and len(book.incidents["inc0"].alarms) == 1


def test_incident_collects_evidence_and_highest_severity() -> None:
    book = IncidentBook()
    apply_all(book, [alarm("bank", 0, risk=Risk.LOW, camera="c1"),
                     alarm("bank", 5, risk=Risk.HIGH, camera="c2", track=4)])
    inc = book.incidents["inc0"]
    assert inc.severity is Severity.CRITICAL
    assert inc.cameras == {"c1", "c2"} and inc.active_alarms == 2


def test_closed_loop() -> None:
    book = IncidentBook()
    apply_all(book, [alarm("bank", 0)])
    with pytest.raises(LifecycleError, match="note"):
        book.resolve("inc0", "li", "  ", now=10)
    book.acknowledge("inc0", "wang", now=5)
    with pytest.raises(LifecycleError, match="acknowledged"):
        book.acknowledge("inc0", "li", now=6)
    inc = book.resolve("inc0", "li", "guided the visitor back behind the rail", now=20)
    assert (inc.status, inc.acknowledged_by, inc.resolved_by) == (Status.RESOLVED, "wang", "li")
    with pytest.raises(LifecycleError, match="already resolved"):
        book.resolve("inc0", "li", "again", now=21)
    # After resolution a new alarm in the zone opens a new incident, even inside the window.
    res = book.apply(alarm("bank", 30, track=5), "park", "inc-new", arrived=30)
    assert res is not None and res.new_incident and res.incident.id == "inc-new"
    assert book.incidents["inc0"].status is Status.RESOLVED


def test_escalation_until_acknowledged() -> None:
    book = IncidentBook()
    apply_all(book, [alarm("bank", 0, risk=Risk.HIGH)])
    timeouts = {"high": 30.0, "medium": 120.0}
    assert book.due_escalations(29, timeouts, repeat_s=60) == []
    assert [i.escalation_level for i in book.due_escalations(30, timeouts, 60)] == [1]
    assert book.due_escalations(60, timeouts, repeat_s=60) == []
    assert [i.escalation_level for i in book.due_escalations(90, timeouts, 60)] == [2]
    book.acknowledge("inc0", "wang", now=95)
    assert book.due_escalations(1000, timeouts, repeat_s=60) == []


def test_zone_groups_are_transitive() -> None:
    g = zone_groups({"a": ["b"], "c": ["b"], "x": ["y"]})
    assert g["a"] == g["b"] == g["c"] == "a" and g["x"] == g["y"] == "x"


# -- time: the central's clock at arrival, the alarm's own time only evidence ------------------

DAY, YEAR = 86400.0, 365 * 86400.0
T = 1_700_000_000.0  # "now" on the central's clock


@pytest.mark.parametrize(("alarm_time", "arrived", "flag"), [
    (T, T, None),
    (T - 59, T, None),
    (T - 61, T, "late"),  # an outbox emptying after an outage
    (T - DAY - 1, T, "past"),  # a clock far behind, or a very old outbox
    (T + 299, T, None),
    (T + 301, T, "future"),  # an edge clock ahead
    (T + 10 * YEAR, T, "future"),
    (1.0, T, "past"),
])
def test_time_policy_flags(alarm_time: float, arrived: float, flag: str | None) -> None:
    assert TimePolicy(late_s=60, past_s=DAY, future_s=300).flag(alarm_time, arrived) == flag


def test_a_future_dated_alarm_captures_nothing() -> None:
    """Row 2: an edge clock ten years ahead opens an incident on the central's clock; once the
    merge window has passed, a real alarm opens its own incident (and speaks)."""
    book = IncidentBook(merge_window_s=120)
    ahead = book.apply(alarm("bank", T + 10 * YEAR), "park", "inc-future", arrived=T)
    assert ahead is not None and ahead.flag == "future"
    inc = ahead.incident
    assert (inc.opened_at, inc.last_activity) == (T, T)
    assert not inc.late  # a box with a wrong clock still reports a person there now
    real = book.apply(alarm("bank", T + 200, track=2), "park", "inc-real", arrived=T + 200)
    assert real is not None and real.new_incident and real.incident.id == "inc-real"


def test_a_past_dated_alarm_escalates_on_the_central_clock() -> None:
    """Row 3: ``time: 1.0`` no longer escalates every second: the timeout runs from arrival."""
    book = IncidentBook()
    applied = book.apply(alarm("bank", 1.0, risk=Risk.HIGH), "park", "inc0", arrived=T)
    assert applied is not None and applied.flag == "past" and applied.incident.late
    timeouts = {"high": 30.0}
    levels = [len(book.due_escalations(T + s, timeouts, repeat_s=120)) for s in range(1, 13)]
    assert levels == [0] * 12
    assert [i.escalation_level for i in book.due_escalations(T + 30, timeouts, 120)] == [1]


def test_a_late_incident_becomes_timely_when_someone_is_there_now() -> None:
    book = IncidentBook(merge_window_s=120)
    late = book.apply(alarm("bank", T - 600), "park", "inc0", arrived=T)
    assert late is not None and late.new_incident and late.incident.late
    again = book.apply(alarm("bank", T - 590, track=2), "park", "x", arrived=T + 1)
    assert again is not None and again.flag == "late" and not again.now_timely
    live = book.apply(alarm("bank", T + 5, track=3), "park", "x", arrived=T + 5)
    assert live is not None and live.now_timely and not live.incident.late
    assert live.incident.id == "inc0"
    summary = next(iter(live.incident.alarms.values()))  # the first, late alarm
    assert summary["time_flag"] == "late" and summary["arrived_at"] == T


def test_after_an_outage_levels_come_one_repeat_apart() -> None:
    """An incident nobody acknowledged while the central was down for ten minutes climbs
    one level per ``repeat_s``, not one per tick (each level speaks and notifies)."""
    book = IncidentBook()
    book.apply(alarm("bank", T, risk=Risk.HIGH), "park", "inc0", arrived=T)
    timeouts = {"high": 30.0}
    back = T + 600  # the central returns
    got = [len(book.due_escalations(back + s, timeouts, repeat_s=120)) for s in range(0, 5)]
    assert got == [1, 0, 0, 0, 0]
    assert len(book.due_escalations(back + 120, timeouts, repeat_s=120)) == 1


def test_an_incident_stored_with_an_edge_time_ahead_captures_nothing() -> None:
    """Incidents stored by an older version carry the edge's time; one ten years ahead must
    neither swallow new alarms of its group nor never escalate."""
    book = IncidentBook(merge_window_s=120)
    book.apply(alarm("bank", T), "park", "legacy", arrived=T + 10 * YEAR)  # as stored then
    fresh = book.apply(alarm("bank", T, track=2), "park", "fresh", arrived=T)
    assert fresh is not None and fresh.new_incident and fresh.incident.id == "fresh"
    assert book.due_escalations(T, {"high": 30.0}, 120) == []
    assert [i.id for i in book.due_escalations(T + 30, {"high": 30.0}, 120)] == [
        "legacy", "fresh"]
