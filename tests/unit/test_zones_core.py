"""Tables for the pure core: geometry, calibration, crowd, profiles and the alarm contract."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from tests.support.scenario import people, run, summary
from tests.support.services import REPO_ROOT
from zones.alarm import Alarm
from zones.calibration import GroundPlane, fit_homography
from zones.crowd import CrowdRule
from zones.geometry import (
    Fence,
    GeometryError,
    Risk,
    Tripwire,
    ZoneKind,
    check_inside_frame,
    check_polygon,
    to_pixels,
)
from zones.profiles import Period, Schedule, ThresholdOverrides, Thresholds
from zones.tracks import Detections

SQUARE = [(20.0, 20.0), (60.0, 20.0), (60.0, 60.0), (20.0, 60.0)]


@pytest.mark.parametrize(("points", "message"), [
    ([(0, 0), (1, 1)], "at least 3 points"),
    ([(0, 0), (10, 10), (10, 0), (0, 10)], "not simple"),
    ([(0, 0), (5, 5), (10, 10)], "not simple|zero area"),
])
def test_bad_polygons_are_rejected(points: list, message: str) -> None:
    with pytest.raises(GeometryError, match=message):
        check_polygon(points)


@pytest.mark.parametrize(("points", "coords", "expected"), [
    ([(0.5, 0.5)], "auto", [(384.0, 288.0)]),
    ([(0.5, 0.5)], "pixels", [(0.5, 0.5)]),
    ([(100, 50)], "auto", [(100.0, 50.0)]),
    ([(1, 1)], "normalized", [(768.0, 576.0)]),
])
def test_to_pixels(points: list, coords: str, expected: list) -> None:
    assert to_pixels(points, (768, 576), coords) == expected


def test_zone_outside_the_frame_is_rejected() -> None:
    check_inside_frame([(0, 0), (768, 576)], (768, 576))
    with pytest.raises(GeometryError, match="outside the 768x576 frame"):
        check_inside_frame([(0, 0), (900, 100)], (768, 576))


def test_fence_contains_is_vectorised_and_counts_the_boundary() -> None:
    f = Fence("z", ZoneKind.WATER, Risk.LOW, SQUARE)
    pts = np.array([[40, 40], [60, 40], [61, 40], [0, 0]], dtype=float)
    assert f.contains(pts).tolist() == [True, True, False, False]
    assert f.contains(np.zeros((0, 2))).shape == (0,)


def test_tripwire_into_point_on_the_line_is_rejected() -> None:
    with pytest.raises(GeometryError, match="on the line"):
        Tripwire("w", (0, 0), (10, 0), (5, 0))


def test_homography_recovers_a_known_mapping() -> None:
    h = np.array([[0.05, -0.01, 3.0], [0.002, 0.08, -2.0], [0.0001, 0.0004, 1.0]])
    img = np.array([[10, 20], [700, 30], [650, 560], [30, 500], [400, 300]], dtype=float)
    p = np.column_stack((img, np.ones(5))) @ h.T
    world = p[:, :2] / p[:, 2:]
    est = fit_homography(img, world)
    assert np.allclose(est, h / h[2, 2], atol=1e-8)
    gp = GroundPlane(img, world)
    assert gp.rms_error_m < 1e-9
    sq = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    assert GroundPlane(sq, [(0, 0), (2, 0), (2, 2), (0, 2)]).area_m2(sq) == pytest.approx(4.0)


@pytest.mark.parametrize(("image", "message"), [
    ([(0, 0), (1, 0), (2, 0)], "at least 4"),
    ([(0, 0), (1, 0), (2, 0), (3, 0)], "degenerate"),
])
def test_bad_calibration(image: list, message: str) -> None:
    with pytest.raises(GeometryError, match=message):
        fit_homography(image, [(i, i * 2 + 1) for i in range(len(image))])


def crowd_frames(counts: list[int]) -> list[dict[int, tuple[float, float]]]:
    return [{i: (25.0 + 3 * i, 40.0) for i in range(n)} for n in counts]


CROWD_TH = Thresholds(crowd_count=3, crowd_clear_ratio=0.5, crowd_hold_seconds=0.2)
CROWD_TABLE = [
    ("below threshold", [2] * 8, []),
    ("at threshold for the hold time", [0, 3, 3, 3, 3], [("raised", 4)]),
    ("spike shorter than hold", [0, 4, 4, 0, 0, 4, 0], []),
    ("hovering between clear and raise keeps one alarm", [3, 3, 3, 2, 3, 2, 2, 3], [("raised", 3)]),
    ("clears after hold below ratio", [3, 3, 3, 1, 1, 1, 1], [("raised", 3), ("cleared", 6)]),
]


@pytest.mark.parametrize(("name", "counts", "expected"), CROWD_TABLE,
                         ids=[r[0] for r in CROWD_TABLE])
def test_crowd_count_table(name: str, counts: list[int], expected: list) -> None:
    rule = CrowdRule("cam", Fence("sq", ZoneKind.CROWD, Risk.MEDIUM, SQUARE))
    events = run(rule, crowd_frames(counts), CROWD_TH)
    assert [(s, f) for _, s, _, f in summary(events)] == expected
    if events:
        assert events[0].evidence.count == 3 and events[0].evidence.density is None
        assert events[0].track_id is None and len(events[0].track_ids) == 3


def test_crowd_density_uses_the_ground_area() -> None:
    rule = CrowdRule("cam", Fence("sq", ZoneKind.CROWD, Risk.MEDIUM, SQUARE), area_m2=2.0)
    th = Thresholds(crowd_count=100, crowd_density=1.5, crowd_hold_seconds=0.0)
    assert rule.step(people(1, {1: (30, 30), 2: (40, 40)}), th) == []  # 1.0 /m^2
    (a,) = rule.step(people(2, {1: (30, 30), 2: (40, 40), 3: (50, 50)}), th)  # 1.5 /m^2
    assert a.evidence.density == pytest.approx(1.5) and a.evidence.area_m2 == 2.0


def test_periods_and_overrides_resolve_in_order() -> None:
    night = Period(name="night", times=[("19:00", "06:00")],
                   overrides=ThresholdOverrides(intrusion_frames=1))
    holiday = Period(name="holiday", dates=[(dt.date(2026, 10, 1), dt.date(2026, 10, 7))],
                     overrides=ThresholdOverrides(crowd_count=5, intrusion_frames=4))
    sched = Schedule([night, holiday], "Asia/Shanghai")
    zone = ThresholdOverrides(dwell_seconds=7)

    def at(text: str) -> tuple[Thresholds, str]:
        t = dt.datetime.fromisoformat(text).timestamp()
        return Schedule(sched.periods, "Asia/Shanghai").resolve(Risk.HIGH, zone, t)

    th, name = at("2026-11-28T12:00:00+08:00")
    assert (name, th.intrusion_frames, th.dwell_seconds) == ("default", 2, 7)
    th, name = at("2026-11-28T23:30:00+08:00")
    assert (name, th.intrusion_frames) == ("night", 1)
    th, name = at("2026-10-02T02:00:00+08:00")
    assert (name, th.intrusion_frames, th.crowd_count) == ("night+holiday", 4, 5)
    th, name = at("2026-10-02T12:00:00+08:00")
    assert (name, th.intrusion_frames) == ("holiday", 4)


def test_alarm_json_round_trip_and_committed_schema() -> None:
    d = people(3, {4: (40, 40)})
    a = run_one(d)
    assert Alarm.from_json(a.to_json()) == a
    wire = json.loads(a.to_json())
    assert wire["schema"] == "perimeter.alarm/1"
    for key in ("kind", "camera", "zone", "track_id", "frame", "time", "state", "id"):
        assert key in wire
    committed = json.loads((REPO_ROOT / "zones" / "alarm.schema.json").read_text())
    assert committed == Alarm.model_json_schema(by_alias=True), (
        "the alarm model changed: regenerate zones/alarm.schema.json and bump the version "
        "if the change breaks consumers")


def run_one(d: Detections) -> Alarm:
    from zones.rules import IntrusionRule

    rule = IntrusionRule("cam", Fence("z", ZoneKind.CLIFF, Risk.HIGH, SQUARE))
    th = Thresholds(intrusion_frames=1)
    (a,) = rule.step(d, th)
    return a


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"boxes": [[0, 0, 1]]}, "shape"),
    ({"boxes": [[0, 0, 1, 1]], "scores": [1, 2]}, "shape"),
    ({"boxes": [[5, 5, 1, 1]]}, "x2 >= x1"),
    ({"boxes": [[0, 0, float("nan"), 1]]}, "NaN"),
])
def test_detections_check_shapes(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Detections.create(**kwargs)
