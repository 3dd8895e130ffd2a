"""Table and scenario tests of the fence rules: foot points in, alarm events out."""

from __future__ import annotations

import pytest

from tests.support.scenario import FPS, T0, merge, people, run, summary, walk
from zones.alarm import AlarmState
from zones.config import HysteresisConfig
from zones.crossing import LineCrossingRule
from zones.geometry import Fence, Risk, Tripwire, ZoneKind
from zones.profiles import Thresholds
from zones.rules import NO_HANDOVER, DwellRule, IntrusionRule

IN, OUT, EDGE = (40.0, 40.0), (80.0, 80.0), (60.0, 40.0)
TH = Thresholds(intrusion_frames=2, intrusion_seconds=0.0, exit_frames=3, dwell_seconds=1.0,
                line_frames=2)
# The frame tables below pin frame hysteresis alone: no exit time (the band stays: OUT is far).
FRAMES = HysteresisConfig(exit_seconds=0.0)


def fence() -> Fence:
    return Fence("edge", ZoneKind.CLIFF, Risk.HIGH, [(20, 20), (60, 20), (60, 60), (20, 60)])


INTRUSION_TABLE = [
    ("never inside", [OUT] * 6, []),
    ("enters and stays: raised on 2nd inside frame",
     [OUT, OUT, IN, IN, IN, IN], [("raised", 4)]),
    ("one-frame flicker inside: nothing", [OUT, IN, OUT, OUT, OUT, OUT], []),
    ("boundary point counts inside", [OUT, EDGE, EDGE], [("raised", 3)]),
    ("out for 1 frame then back: still one alarm",
     [IN, IN, OUT, IN, IN, IN], [("raised", 2)]),
    ("leaves for exit_frames: cleared, re-entry raises again",
     [IN, IN, OUT, OUT, OUT, IN, IN], [("raised", 2), ("cleared", 5), ("raised", 7)]),
    ("occluded (not seen) frames do not clear",
     [IN, IN, None, None, IN, IN], [("raised", 2)]),
]


@pytest.mark.parametrize(("name", "path", "expected"), INTRUSION_TABLE,
                         ids=[r[0] for r in INTRUSION_TABLE])
def test_intrusion_table(name: str, path: list, expected: list) -> None:
    events = run(IntrusionRule("cam", fence(), hysteresis=FRAMES), walk(7, path), TH)
    assert [(s, f) for _, s, _, f in summary(events)] == expected
    assert all(e.track_id == 7 and e.zone == "edge" for e in events)


def test_intrusion_seconds_threshold_uses_frame_time() -> None:
    th = TH.model_copy(update={"intrusion_seconds": 0.5})
    events = run(IntrusionRule("cam", fence()), walk(1, [IN] * 10), th)
    # 0.5 s at 10 fps: frame 1 is t=0, frame 6 is t=0.5.
    assert summary(events) == [("intrusion", "raised", 1, 6)]


def test_intrusion_alarm_fields() -> None:
    events = run(IntrusionRule("cam", fence()), walk(3, [OUT, IN, IN]), TH)
    (a,) = events
    assert a.first_frame == 2 and a.frame == 3
    assert a.first_time == pytest.approx(T0 + 1 / FPS)
    assert a.severity.value == "critical" and a.zone_kind is ZoneKind.CLIFF
    assert a.evidence.boxes == [(35.0, 20.0, 45.0, 40.0)]
    assert a.event_id == f"{a.id}:raised"


def test_raise_and_clear_share_the_alarm_id() -> None:
    events = run(IntrusionRule("cam", fence(), hysteresis=FRAMES), walk(3, [IN, IN, OUT, OUT, OUT]),
                 TH)
    assert [e.state for e in events] == [AlarmState.RAISED, AlarmState.CLEARED]
    assert events[0].id == events[1].id and events[0].event_id != events[1].event_id
    assert events[1].evidence.reason == "left the zone"


def test_two_people_alarm_independently() -> None:
    frames = merge(walk(1, [IN, IN, IN, IN]), walk(2, [OUT, OUT, IN, IN]))
    events = run(IntrusionRule("cam", fence()), frames, TH)
    assert summary(events) == [("intrusion", "raised", 1, 2), ("intrusion", "raised", 2, 4)]


def test_lost_track_inside_is_cleared_and_forgotten() -> None:
    rule = IntrusionRule("cam", fence(), forget_after_s=0.5)
    frames = walk(5, [IN, IN]) + [{9: OUT}] * 8
    events = run(rule, frames, TH)
    assert [(e.state.value, e.track_id) for e in events] == [("raised", 5), ("cleared", 5)]
    assert events[1].evidence.reason == "track lost"
    assert 5 not in rule.state


def test_state_does_not_grow_with_every_passer_by() -> None:
    rule = IntrusionRule("cam", fence(), forget_after_s=1.0)
    for f in range(1, 2001):
        rule.step(people(f, {f: IN}), TH)  # a new track id every frame
    assert len(rule.state) <= 1.0 * FPS + 2


# Tripwire x = 50 from y = 0 to y = 100; the alarmed side is x > 50.
LEFT, RIGHT = (40.0, 50.0), (60.0, 50.0)
LINE_TABLE = [
    ("left to right raises once, on confirmation",
     [LEFT, LEFT, RIGHT, RIGHT, RIGHT], (80.0, 50.0), [4]),
    ("right to left is not the alarmed direction", [RIGHT, RIGHT, LEFT, LEFT], (80.0, 50.0), []),
    ("both directions when into is unset", [RIGHT, RIGHT, LEFT, LEFT, RIGHT, RIGHT], None, [4, 6]),
    ("one-frame jitter across the line: nothing",
     [LEFT, LEFT, RIGHT, LEFT, LEFT, RIGHT, LEFT], (80.0, 50.0), []),
    ("walking along the line inside the deadband: nothing",
     [(49.5, 10.0), (50.5, 20.0), (49.5, 30.0), (50.5, 40.0)], None, []),
    ("first seen on the alarmed side: nothing", [RIGHT, RIGHT, RIGHT], (80.0, 50.0), []),
]


@pytest.mark.parametrize(("name", "path", "into", "frames"), LINE_TABLE,
                         ids=[r[0] for r in LINE_TABLE])
def test_line_crossing_table(name: str, path: list, into: tuple | None, frames: list) -> None:
    rule = LineCrossingRule("cam", Tripwire("w", (50, 0), (50, 100), into), fence())
    events = run(rule, walk(4, path), TH)
    assert [e.frame for e in events] == frames
    assert all(e.kind.value == "line_crossing" and e.evidence.line == "w" for e in events)


def test_line_direction_does_not_depend_on_endpoint_order() -> None:
    for a, b in [((50, 0), (50, 100)), ((50, 100), (50, 0))]:
        rule = LineCrossingRule("cam", Tripwire("w", a, b, (80.0, 50.0)), fence())
        assert len(run(rule, walk(1, [LEFT, LEFT, RIGHT, RIGHT]), TH)) == 1
        rule = LineCrossingRule("cam", Tripwire("w", a, b, (80.0, 50.0)), fence())
        assert run(rule, walk(1, [RIGHT, RIGHT, LEFT, LEFT]), TH) == []


def test_crossing_the_line_beyond_its_end_is_not_a_crossing() -> None:
    rule = LineCrossingRule("cam", Tripwire("w", (50, 0), (50, 40), None), fence())
    assert run(rule, walk(1, [(40.0, 80.0), (40.0, 80.0), (60.0, 80.0), (60.0, 80.0)]), TH) == []


DWELL_TABLE = [
    ("inside 1 s: raised on the frame 1 s after entry", [IN] * 12, [("raised", 11)]),
    ("short visit: nothing", [IN] * 5 + [OUT] * 5, []),
    ("brief exit does not restart the clock", [IN] * 5 + [OUT] + [IN] * 6, [("raised", 11)]),
    ("leaving clears", [IN] * 11 + [OUT] * 3, [("raised", 11), ("cleared", 14)]),
]


@pytest.mark.parametrize(("name", "path", "expected"), DWELL_TABLE,
                         ids=[r[0] for r in DWELL_TABLE])
def test_dwell_table(name: str, path: list, expected: list) -> None:
    events = run(DwellRule("cam", fence(), hysteresis=FRAMES), walk(2, path), TH)
    assert [(s, f) for _, s, _, f in summary(events)] == expected
    if events:
        assert events[0].evidence.dwell_s == pytest.approx(1.0)


def test_identity_switch_inside_keeps_one_alarm() -> None:
    # Track 1 walks in and is confirmed, then the tracker loses it and re-acquires the same
    # person as track 2 on the spot: the alarm follows the person instead of raising again.
    frames = walk(1, [OUT, IN, IN, IN]) + walk(2, [(41.0, 40.0), (42.0, 40.0)] + [OUT] * 3)
    events = run(IntrusionRule("cam", fence(), hysteresis=FRAMES), frames, TH)
    assert summary(events) == [("intrusion", "raised", 1, 3), ("intrusion", "cleared", 2, 9)]
    assert events[0].id == events[1].id
    assert events[1].track_ids == [1, 2]


def test_handover_reach_zero_disables_handover_even_on_the_same_spot() -> None:
    frames = walk(1, [OUT, IN, IN, IN]) + walk(2, [IN, IN, IN])
    events = run(IntrusionRule("cam", fence(), handover=NO_HANDOVER), frames, TH)
    assert [e.track_id for e in events if e.state is AlarmState.RAISED] == [1, 2]


def test_someone_walking_in_next_to_a_lost_track_is_a_new_entry() -> None:
    frames = walk(1, [OUT, IN, IN, IN]) + walk(2, [OUT, (41.0, 40.0), (42.0, 40.0)])
    events = run(IntrusionRule("cam", fence()), frames, TH)
    assert summary(events) == [("intrusion", "raised", 1, 3), ("intrusion", "raised", 2, 7)]


def test_new_track_far_from_the_lost_one_is_a_new_entry() -> None:
    frames = walk(1, [OUT, (22.0, 22.0), (22.0, 22.0), (22.0, 22.0)]) + walk(
        2, [(58.0, 58.0), (58.0, 58.0)])  # 50 px away, body height 20 px
    events = run(IntrusionRule("cam", fence()), frames, TH)
    assert [e.track_id for e in events if e.state is AlarmState.RAISED] == [1, 2]
