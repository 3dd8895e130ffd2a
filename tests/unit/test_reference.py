"""The randomised-zone evaluation's yardstick: ground-truth tracks in, expected alarms out.

The reference must say what a person watching the ground truth would call an alarm, whatever
the product's rules do; these tables pin its definition (``benchmarks/reference.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from benchmarks.reference import (
    LineZone,
    PolygonZone,
    Track,
    crossings,
    entries,
)
from benchmarks.zone_score import score_set
from benchmarks.zonegen import POLYGONS, TRIPWIRES, draw
from zones.alarm import Alarm, AlarmKind, AlarmState, Evidence
from zones.engine import CameraRules
from zones.geometry import Risk, ZoneKind
from zones.profiles import Schedule

FPS = 4.0  # re-arm 1 s = 4 frames, shortest visit 0.25 s -> 2 frames (at least 2)
SQUARE = PolygonZone("z", [(20.0, 20.0), (60.0, 20.0), (60.0, 60.0), (20.0, 60.0)])
IN, OUT = (40.0, 40.0), (80.0, 80.0)


def track(path: Sequence[tuple[float, float] | None], tid: int = 1,
          hidden: tuple[int, ...] = ()) -> Track:
    """Foot points per frame from frame 1 (None: not annotated); 10x20 boxes above them."""
    rows = [(i + 1, p) for i, p in enumerate(path) if p is not None]
    frames = np.array([f for f, _ in rows])
    boxes = np.array([[x - 5, y - 20, x + 5, y] for _, (x, y) in rows], dtype=float)
    counted = np.array([f not in hidden for f in frames])
    return Track(tid, frames, boxes, counted)


ENTRY_TABLE = [
    ("never inside", [OUT] * 8, [], {}),
    ("walks in: entry on the first inside frame", [OUT, OUT, IN, IN, IN], [(3, True)], {}),
    ("first seen inside: entry on frame 1", [IN, IN, IN], [(1, True)], {}),
    ("out for 3 frames (under 1 s): one visit", [IN, IN, OUT, OUT, OUT, IN, IN], [(1, True)],
     {}),
    ("out for 4 frames (1 s): a second entry",
     [IN, IN, OUT, OUT, OUT, OUT, IN, IN], [(1, True), (7, True)], {}),
    ("one frame inside: don't care", [OUT, IN, OUT, OUT], [(2, False)], {}),
    ("not annotated frames are not inside", [IN, IN, None, None, None, None, IN, IN],
     [(1, True), (7, True)], {}),
    ("hidden just before the entry: don't care", [IN, IN, IN, IN, IN, IN, IN],
     [(1, True), (7, False)], {"hidden": (3, 4, 5, 6)}),
]


@pytest.mark.parametrize(("name", "path", "expected", "kw"), ENTRY_TABLE,
                         ids=[r[0] for r in ENTRY_TABLE])
def test_entries(name: str, path: list[Any], expected: list[Any], kw: dict[str, Any]) -> None:
    got = entries(SQUARE, {1: track(path, **kw)}, FPS)
    assert [(e.frame, e.required) for e in got] == expected
    assert all(e.kind == "intrusion" and e.zone == "z" and e.line is None for e in got)


def test_entry_window_runs_from_early_to_the_end_of_the_visit() -> None:
    (e,) = entries(SQUARE, {1: track([OUT] * 6 + [IN] * 3 + [OUT] * 6)}, FPS)
    assert (e.frame, e.first, e.last) == (7, 7 - 3, 9 + 4)  # early 0.75 s, re-arm 1 s


# Tripwire x = 50 from y = 0 to y = 100.
L, R = (40.0, 50.0), (60.0, 50.0)
LINE_TABLE = [
    ("left to right", [L, L, R, R, R], None, [(3, True)]),
    ("only towards into", [L, L, R, R, L, L, L], (80.0, 50.0), [(3, True)]),
    ("both ways when into is unset, back within 1 s: don't care",
     [L, L, R, R, L, L, L], None, [(3, True), (5, False)]),
    ("back after 1 s counts", [L, L, R, R, R, R, L, L], None, [(3, True), (7, True)]),
    ("beyond the segment's end: no crossing", [(40.0, 150.0), (40.0, 150.0), (60.0, 150.0),
                                               (60.0, 150.0)], None, []),
    ("a point on the line has no side", [L, (50.0, 50.0), R, R], None, [(3, True)]),
    ("steps straight back: don't care", [L, L, R, L, L, L, L, L], (80.0, 50.0), [(3, False)]),
    ("footage ends on the crossing frame: don't care", [L, L, L, R], None, [(4, False)]),
]


@pytest.mark.parametrize(("name", "path", "into", "expected"), LINE_TABLE,
                         ids=[r[0] for r in LINE_TABLE])
def test_crossings(name: str, path: list[Any], into: tuple[float, float] | None,
                   expected: list[Any]) -> None:
    wire = LineZone("w-zone", "w", (50.0, 0.0), (50.0, 100.0), into)
    got = crossings(wire, {1: track(path)}, FPS)
    assert [(e.frame, e.required) for e in got] == expected
    assert all(e.kind == "line_crossing" and e.line == "w" for e in got)


def _alarm(frame: int, x: float, kind: AlarmKind = AlarmKind.INTRUSION) -> Alarm:
    return Alarm.make(kind=kind, state=AlarmState.RAISED, camera="c", zone="z",
                      zone_kind=ZoneKind.CLIFF, risk=Risk.HIGH, key=f"k{frame}",
                      first_frame=frame, first_time=0.0, frame=frame, time=float(frame),
                      track_id=1, track_ids=[1], profile="default",
                      evidence=Evidence(boxes=[(x - 5, 20.0, x + 5, 40.0)]))


def test_scoring_counts_hits_repeats_and_strangers() -> None:
    tracks = {1: track([OUT, IN, IN, IN, IN, IN, IN, IN])}
    expected = entries(SQUARE, tracks, FPS)
    alarms = [_alarm(3, 40.0), _alarm(6, 40.0), _alarm(7, 300.0)]
    s = score_set(0, alarms, expected, tracks)
    assert (s.required, s.raised, s.matched, s.delays) == (1, 3, 1, [1])
    assert s.false_causes == ["repeat", "no person"]
    assert s.precision == pytest.approx(1 / 3) and s.recall == 1.0


def test_an_alarm_for_a_dont_care_visit_is_neither_hit_nor_false() -> None:
    tracks = {1: track([OUT, IN, OUT, OUT, OUT])}
    s = score_set(0, [_alarm(2, 40.0)], entries(SQUARE, tracks, FPS), tracks)
    assert (s.required, s.raised, s.matched, s.false_alarms) == (0, 0, 0, [])


def _walkers() -> dict[int, Track]:
    rng = np.random.default_rng(0)
    out = {}
    for tid in range(1, 7):
        start, v = rng.uniform(50, 550, 2), rng.uniform(-6, 6, 2)
        path = [(float(x), float(y)) for x, y in
                (np.clip(start + v * k, 10, [630, 470]) for k in range(60))]
        out[tid] = track(path, tid)
    return out


def test_zone_sets_are_reproducible_valid_and_where_people_walk() -> None:
    tracks, size = _walkers(), (640, 480)
    a, b = draw("scene", 7, tracks, size), draw("scene", 7, tracks, size)
    assert [z.model_dump() for z in a.configs] == [z.model_dump() for z in b.configs]
    assert draw("scene", 8, tracks, size).configs != a.configs
    assert len(a.polygons) == POLYGONS and len(a.lines) == TRIPWIRES
    # The product accepts every zone (inside the frame, simple polygons, unique ids).
    rules = CameraRules("c", a.configs, size, Schedule([]))
    assert len(rules.zones) == POLYGONS + TRIPWIRES
    feet = np.vstack([t.feet for t in tracks.values()])
    for p in a.polygons:  # each polygon is drawn around a foot point someone stood on
        poly = np.asarray(p.points)
        lo, hi = poly.min(axis=0), poly.max(axis=0)
        assert np.any(np.all((feet >= lo) & (feet <= hi), axis=1))


def test_an_alarm_on_a_person_the_ground_truth_ignores_is_not_false() -> None:
    tracks = {1: track([IN, IN, IN, IN], hidden=(1, 2, 3, 4))}
    s = score_set(0, [_alarm(2, 40.0)], entries(SQUARE, tracks, FPS), tracks)
    assert (s.required, s.raised, s.false_alarms) == (0, 0, [])


def test_distribution_over_zone_sets() -> None:
    from benchmarks.random_zones import summarise
    from benchmarks.zone_score import SetScore

    scores = [SetScore(i, required=10, raised=10, matched=10 - i, delays=[i, i + 2])
              for i in range(10)]
    s = summarise(scores)
    assert s["sets"] == 10 and (s["expected"], s["matched"]) == (100, 55)
    assert s["recall_p50"] == pytest.approx(0.55) and s["recall_p10"] == pytest.approx(0.1)
    assert s["delay_p50_of_sets"] == pytest.approx(5.5)  # per-set medians 1, 2, ... 10
