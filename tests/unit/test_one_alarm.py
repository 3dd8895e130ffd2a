"""One person, one alarm: the edge band, the exit time, re-association by motion and looks.

Each table row is a person's foot points per frame (10 frames/s); the rules must raise once
per entry however the foot hovers on an edge or the tracker breaks the person's track.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cli.main import main
from tests.support.scenario import FPS, T0, run, summary, walk
from zones.band import EdgeBand
from zones.calibration import GroundPlane
from zones.config import HandoverConfig, HysteresisConfig, ZoneConfig
from zones.crossing import LineCrossingRule
from zones.engine import CameraRules
from zones.geometry import Fence, Risk, Tripwire, ZoneKind
from zones.handover import Sighting, path_distance, similarity
from zones.profiles import Schedule, Thresholds
from zones.rules import IntrusionRule
from zones.tracks import Detections

TH = Thresholds(intrusion_frames=2, intrusion_seconds=0.0, exit_frames=2, line_frames=2)
SQUARE = [(20.0, 20.0), (60.0, 20.0), (60.0, 60.0), (20.0, 60.0)]
IN, NEAR, FAR = (40.0, 40.0), (62.0, 40.0), (80.0, 40.0)  # boxes 20 px tall: NEAR is 0.1 out
BAND = HysteresisConfig(band_heights=0.25, exit_seconds=0.0)  # 5 px around the edge
NO_BAND = HysteresisConfig(band_heights=0.0, exit_seconds=0.0)


def fence(points: Sequence[tuple[float, float]] = SQUARE) -> Fence:
    return Fence("edge", ZoneKind.CLIFF, Risk.HIGH, list(points))


def raised(events: list[Any]) -> list[tuple[int | None, int]]:
    return [(e.track_id, e.frame) for e in events if e.state.value == "raised"]


HOVER_TABLE = [
    ("hovering on the edge, band: one alarm", BAND,
     [FAR, IN, IN, NEAR, NEAR, IN, NEAR, NEAR, IN, IN], [(1, 3)]),
    ("hovering on the edge, no band: an alarm per step back in", NO_BAND,
     [FAR, IN, IN, NEAR, NEAR, IN, NEAR, NEAR, IN, IN], [(1, 3), (1, 10)]),
    ("clearly out, back in: a second entry even with the band", BAND,
     [FAR, IN, IN, FAR, FAR, IN, IN], [(1, 3), (1, 7)]),
    ("entry is at the edge itself, not a band inside it", BAND,
     [FAR, (60.0, 40.0), (59.0, 40.0)], [(1, 3)]),
    ("a foot on the band does not break an entry's run", BAND,
     [FAR, IN, NEAR, IN], [(1, 4)]),
]


@pytest.mark.parametrize(("name", "hyst", "path", "expected"), HOVER_TABLE,
                         ids=[r[0] for r in HOVER_TABLE])
def test_edge_band(name: str, hyst: HysteresisConfig, path: list[Any],
                   expected: list[tuple[int, int]]) -> None:
    events = run(IntrusionRule("cam", fence(), hysteresis=hyst), walk(1, path), TH)
    assert raised(events) == expected


EXIT_TABLE = [
    ("out for 0.4 s of a 1 s exit time: one alarm, no clear",
     [IN, IN] + [FAR] * 4 + [IN, IN], [("raised", 2)]),
    ("out for 1 s: cleared, and the return is a new entry",
     [IN, IN] + [FAR] * 11 + [IN, IN], [("raised", 2), ("cleared", 13), ("raised", 15)]),
]


@pytest.mark.parametrize(("name", "path", "expected"), EXIT_TABLE,
                         ids=[r[0] for r in EXIT_TABLE])
def test_exit_time(name: str, path: list[Any], expected: list[tuple[str, int]]) -> None:
    rule = IntrusionRule("cam", fence(), hysteresis=HysteresisConfig(exit_seconds=1.0))
    events = run(rule, walk(1, path), TH)
    assert [(s, f) for _, s, _, f in summary(events)] == expected


def test_band_in_metres_on_a_calibrated_camera() -> None:
    # 10 px per metre: a 0.3 m band is 3 px whatever the box's height.
    ground = GroundPlane([(0, 0), (100, 0), (100, 100), (0, 100)],
                         [(0, 0), (10, 0), (10, 10), (0, 10)])
    band = EdgeBand(band_m=0.3, band_heights=5.0, ground=ground)
    feet = np.array([[62.0, 40.0], [64.0, 40.0], [40.0, 40.0]])
    clear = band.clear_of_fence(fence(), feet, np.full(3, 200.0), np.array([True, True, False]))
    assert clear.tolist() == [False, True, False]


def test_band_in_body_heights_scales_with_the_person() -> None:
    band = EdgeBand(band_m=0.3, band_heights=0.15)
    feet = np.array([[64.0, 40.0], [64.0, 40.0]])
    clear = band.clear_of_fence(fence(), feet, np.array([20.0, 40.0]), np.array([True, True]))
    assert clear.tolist() == [True, False]  # 4 px out: beyond 3 px, within 6 px


# Tripwire x = 50; boxes 20 px tall, band 5 px.
L, R, R_NEAR, L_NEAR = (40.0, 50.0), (60.0, 50.0), (53.0, 50.0), (47.0, 50.0)
BAND_1S = HysteresisConfig(band_heights=0.25, exit_seconds=1.0)
LINE_TABLE = [
    ("over, then hovering on the line: one crossing", BAND_1S,
     [L, L, R_NEAR, R_NEAR, L_NEAR, R_NEAR, R_NEAR, L_NEAR, L_NEAR], [4]),
    ("the same without a band or re-arm time: a crossing per step over", NO_BAND,
     [L, L, R_NEAR, R_NEAR, L_NEAR, L_NEAR, R_NEAR, R_NEAR], [4, 6, 8]),
    ("over, clear of the band, back: two crossings", BAND_1S,
     [L, L, R, R, L, L], [4, 6]),
    ("on the line, back over after the 1 s re-arm time: two crossings", BAND_1S,
     [L, L, R_NEAR] + [R_NEAR] * 10 + [L_NEAR, L_NEAR], [4, 15]),
]


@pytest.mark.parametrize(("name", "hyst", "path", "expected"), LINE_TABLE,
                         ids=[r[0] for r in LINE_TABLE])
def test_tripwire_re_arms_beyond_the_band(name: str, hyst: HysteresisConfig, path: list[Any],
                                          expected: list[int]) -> None:
    rule = LineCrossingRule("cam", Tripwire("w", (50, 0), (50, 100)), fence(), hysteresis=hyst)
    assert [e.frame for e in run(rule, walk(1, path), TH)] == expected


# Re-association: a wide fence; person 1 walks right at 100 px/s and is lost for 0.5 s.
WIDE = [(0.0, 0.0), (300.0, 0.0), (300.0, 100.0), (0.0, 100.0)]
WALK_1 = [(20.0 + 10 * k, 50.0) for k in range(5)]  # last seen at x = 60, frame 5
GAP = [None] * 4  # frames 6-9
REACQUIRE = [
    ("on the predicted path (kept walking): the alarm follows", (110.0, 50.0), True),
    ("where last seen (stopped behind a post): the alarm follows", (62.0, 50.0), True),
    ("behind where it was (someone else): a new entry", (15.0, 50.0), False),
    ("across the path (someone else): a new entry", (90.0, 85.0), False),
]


@pytest.mark.parametrize(("name", "at", "same"), REACQUIRE, ids=[r[0] for r in REACQUIRE])
def test_reassociation_follows_the_motion(name: str, at: tuple[float, float],
                                          same: bool) -> None:
    frames = walk(1, WALK_1 + GAP) + walk(2, [at, (at[0] + 10, at[1]), (at[0] + 20, at[1])])
    rule = IntrusionRule("cam", fence(WIDE), hysteresis=NO_BAND,
                         handover=HandoverConfig(appearance=False))
    events = run(rule, frames, TH)
    assert raised(events) == ([(1, 2)] if same else [(1, 2), (2, 11)])


def test_spot_handover_misses_a_person_who_kept_walking() -> None:
    frames = walk(1, WALK_1 + GAP) + walk(2, [(110.0, 50.0), (120.0, 50.0)])
    spot = HandoverConfig(reach_heights=1.0, predict_seconds=0.0, appearance=False)
    rule = IntrusionRule("cam", fence(WIDE), hysteresis=NO_BAND, handover=spot)
    assert raised(run(rule, frames, TH)) == [(1, 2), (2, 11)]


def _frames(paths: dict[int, list[tuple[float, float] | None]],
            looks: dict[int, np.ndarray]) -> list[Detections]:
    n = max(len(p) for p in paths.values())
    out = []
    for k in range(n):
        ids = [t for t, p in paths.items() if k < len(p) and p[k] is not None]
        feet = [paths[t][k] for t in ids]
        boxes = [[x - 5, y - 20, x + 5, y] for x, y in feet]  # type: ignore[misc]
        d = Detections.create(np.asarray(boxes, dtype=float).reshape(-1, 4), None, None, ids,
                              camera="cam", frame=k + 1, time=T0 + k / FPS,
                              frame_size=(300, 100))
        out.append(d.with_appearance(np.array([looks[t] for t in ids]).reshape(len(ids), 8)))
    return out


def _look(*hot: int) -> np.ndarray:
    h = np.full(8, 0.02)
    for i in hot:
        h[i] = 1.0
    return np.concatenate([h[:4] / h[:4].sum(), h[4:] / h[4:].sum()])


@pytest.mark.parametrize(("look2", "same"), [(_look(0, 5), True), (_look(2, 7), False)],
                         ids=["looks alike: the alarm follows", "looks different: new entry"])
def test_reassociation_checks_appearance(look2: np.ndarray, same: bool) -> None:
    paths: dict[int, list[tuple[float, float] | None]] = {
        1: [*WALK_1, *GAP], 2: [None] * 9 + [(110.0, 50.0), (120.0, 50.0), (130.0, 50.0)]}
    rule = IntrusionRule("cam", fence(WIDE), hysteresis=NO_BAND, handover=HandoverConfig())
    events = [e for f in _frames(paths, {1: _look(0, 5), 2: look2}) for e in rule.step(f, TH)]
    assert raised(events) == ([(1, 2)] if same else [(1, 2), (2, 11)])
    if same:
        assert rule.state[2].ids == [1, 2]


def test_similarity_and_path_distance() -> None:
    assert similarity(_look(0, 5), _look(0, 5)) == pytest.approx(1.0)
    assert similarity(_look(0, 5), _look(2, 7)) < 0.4
    lost = Sighting((0.0, 0.0), 0.0, 20.0, velocity=(100.0, 0.0))
    assert path_distance((50.0, 0.0), lost, 0.5, predict_s=1.0) == pytest.approx(0.0)
    assert path_distance((-10.0, 0.0), lost, 0.5, predict_s=1.0) == pytest.approx(10.0)
    assert path_distance((150.0, 0.0), lost, 3.0, predict_s=1.0) == pytest.approx(50.0)


def test_appearance_is_asked_for_only_where_a_rule_uses_it() -> None:
    def zone(**kw: Any) -> ZoneConfig:
        return ZoneConfig(id="z", kind=ZoneKind.CLIFF, polygon=SQUARE, coords="pixels", **kw)

    off = HandoverConfig(appearance=False)
    assert CameraRules("c", [zone()], (100, 100), Schedule([])).needs_appearance
    assert not CameraRules("c", [zone(handover=off)], (100, 100), Schedule([])).needs_appearance
    crowd = ZoneConfig(id="z", kind=ZoneKind.CROWD, polygon=SQUARE, coords="pixels")
    assert not CameraRules("c", [crowd], (100, 100), Schedule([])).needs_appearance


def test_appearance_rows_follow_their_people() -> None:
    d = Detections.create([[0, 0, 1, 2], [1, 1, 3, 3]], track_ids=[4, -1])
    d = d.with_appearance([[0.1, 0.9], [0.5, 0.5]])
    tracked = d.tracked
    assert tracked.appearance is not None and tracked.appearance.tolist() == [[0.1, 0.9]]
    with pytest.raises(ValueError, match="appearance"):
        d.with_appearance([[0.1, 0.9]])
    with pytest.raises(ValueError, match="appearance"):
        d.with_appearance([[np.nan, 0.0], [0.0, 0.0]])


@pytest.mark.parametrize(("text", "field", "message"), [
    ("hysteresis: {band_m: -0.1}", "hysteresis.band_m", "greater than or equal to 0"),
    ("hysteresis: {exit_secs: 1}", "hysteresis.exit_secs", "Extra inputs are not permitted"),
    ("handover: {min_similarity: 1.5}", "handover.min_similarity", "less than or equal to 1"),
])
def test_bad_hysteresis_config_names_file_line_and_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, field: str,
        message: str) -> None:
    cfg = tmp_path / "site.yaml"
    cfg.write_text("cameras:\n  - id: cam\n    source: v.avi\n    zones:\n      - id: e\n"
                   "        kind: cliff\n        polygon: [[0.1, 0.5], [0.4, 0.5], [0.4, 0.9]]\n"
                   f"        {text}\n")
    assert main(["config", "check", str(cfg)]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith(f"error: {cfg}:8: cameras[0].zones[0].{field}: "), err
    assert message in err


def test_a_crossing_survives_a_track_break_at_the_line_and_is_raised_once() -> None:
    # Person 1 walks up to the line (x = 50) and is lost on it; the tracker picks them up on
    # the far side as track 2: one crossing, by track 2. Spot-only re-association: none.
    frames = walk(1, [(26.0, 50.0), (32.0, 50.0), (38.0, 50.0), (44.0, 50.0), None]) + walk(
        2, [(56.0, 50.0), (62.0, 50.0), (68.0, 50.0)])
    wire = Tripwire("w", (50, 0), (50, 100))
    ho = HandoverConfig(appearance=False)
    rule = LineCrossingRule("cam", wire, fence(), hysteresis=BAND_1S, handover=ho)
    assert [(e.track_id, e.frame) for e in run(rule, frames, TH)] == [(2, 7)]
    off = HandoverConfig(reach_heights=0.0)
    rule = LineCrossingRule("cam", wire, fence(), hysteresis=BAND_1S, handover=off)
    assert run(rule, frames, TH) == []
    # Crossed, then lost and picked up again further on: no second crossing.
    again = walk(1, [(38.0, 50.0), (44.0, 50.0), (56.0, 50.0), (62.0, 50.0), None]) + walk(
        2, [(74.0, 50.0), (80.0, 50.0)])
    rule = LineCrossingRule("cam", wire, fence(), hysteresis=BAND_1S, handover=ho)
    assert [(e.track_id, e.frame) for e in run(rule, again, TH)] == [(1, 4)]
