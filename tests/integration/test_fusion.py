"""Fusion: association tables, confidence, radar alarms with and without camera tracks, and
PETS09 end to end through a real broker: the simulated radar's tracks against the camera's
ground-truth boxes projected through its calibration."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from edge.config import load_config
from edge.radar.intake import RadarWorker
from edge.radar.metrics import RadarMetrics
from sim.radar import SimOptions, read_world_tracks, scan
from tests.support.radar import T0, Collector, Publisher, at, rules, site, unique
from tests.support.waiting import wait_until
from zones.fusion import (
    HAVE_SCIPY,
    CameraView,
    associate,
    fused_confidence,
    match_radar_track,
)
from zones.radar_config import FusionConfig
from zones.tracks import Detections


def pts(*xy: tuple[float, float]) -> np.ndarray:
    return np.asarray(xy, dtype=np.float64).reshape(-1, 2)


METHODS = ["greedy", "hungarian"] if HAVE_SCIPY else ["greedy"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("a", "b", "gate", "expected"), [
    (pts(), pts((0, 0)), 1.0, []),
    (pts((0, 0)), pts(), 1.0, []),
    (pts((0, 0)), pts((0.5, 0)), 1.0, [(0, 0, 0.5)]),
    (pts((0, 0)), pts((1.5, 0)), 1.0, []),                       # beyond the gate
    (pts((0, 0)), pts((1.0, 0)), 1.0, [(0, 0, 1.0)]),            # on the gate: in
    (pts((0, 0), (5, 0)), pts((5.2, 0), (0.1, 0)), 1.0, [(0, 1, 0.1), (1, 0, 0.2)]),
    (pts((0, 0), (0.3, 0)), pts((0.2, 0),), 1.0, [(1, 0, 0.1)]),  # one-to-one: the closer
])
def test_associate(method: str, a: np.ndarray, b: np.ndarray, gate: float,
                   expected: list[tuple[int, int, float]]) -> None:
    got = associate(a, b, gate, method)
    assert [(i, j) for i, j, _ in got] == [(i, j) for i, j, _ in expected]
    assert [d for *_, d in got] == pytest.approx([d for *_, d in expected])


@pytest.mark.skipif(not HAVE_SCIPY, reason="SciPy not installed: greedy only")
def test_hungarian_matches_more_people_than_greedy() -> None:
    """Greedy takes the closest pair and strands the other radar track; the optimal
    assignment matches both."""
    a, b = pts((0, 0), (2, 0)), pts((0.9, 0), (-1.2, 0))
    assert [(i, j) for i, j, _ in associate(a, b, 1.3, "greedy")] == [(0, 0)]
    assert [(i, j) for i, j, _ in associate(a, b, 1.3, "hungarian")] == [(0, 1), (1, 0)]
    assert associate(a, b, 1.3) == associate(a, b, 1.3, "hungarian")


@pytest.mark.parametrize(("radar", "score", "dist", "gate", "expected"), [
    (0.7, 1.0, 0.0, 2.0, 1.0),
    (0.7, 0.8, 0.0, 2.0, 0.94),
    (0.7, 0.8, 1.0, 2.0, 0.82),
    (0.7, 0.8, 2.0, 2.0, 0.7),      # at the gate: adds nothing
    (0.7, 0.0, 0.0, 2.0, 0.7),
])
def test_fused_confidence(radar: float, score: float, dist: float, gate: float,
                          expected: float) -> None:
    assert fused_confidence(radar, score, dist, gate) == pytest.approx(expected)


def view(camera: str, t: float, tracks: dict[int, tuple[float, float]],
         score: float = 0.9) -> CameraView:
    ids = list(tracks)
    return CameraView(camera, t, np.asarray(ids, dtype=np.int64),
                      pts(*[tracks[i] for i in ids]), np.full(len(ids), score))


@pytest.mark.parametrize(("radar_tracks", "views", "expected"), [
    ({1: (0, 0)}, {"c": view("c", T0, {5: (0.4, 0)})}, ("c", 5)),
    ({1: (0, 0)}, {"c": view("c", T0 - 1.5, {5: (0.4, 0)})}, None),       # stale view
    ({1: (0, 0)}, {"c": view("c", T0, {5: (3, 0)})}, None),                # beyond the gate
    ({1: (0, 0), 2: (0.2, 0)}, {"c": view("c", T0, {5: (0.3, 0)})}, None),  # track 2 is closer
    ({1: (0, 0)}, {"c": view("c", T0, {5: (1, 0)}), "d": view("d", T0, {8: (0.1, 0)})},
     ("d", 8)),                                                            # two cameras
])
def test_match_radar_track(radar_tracks: dict[int, tuple[float, float]],
                           views: dict[str, CameraView],
                           expected: tuple[str, int] | None) -> None:
    m = match_radar_track(1, radar_tracks, views, T0, gate_m=2.0, max_age_s=1.0)
    assert (None if m is None else (m.camera, m.camera_track)) == expected


def test_fused_and_radar_only_alarms() -> None:
    """Where a camera sees the person the alarm is fused; where it does not, radar-only still
    fires; a cleared event keeps the source its episode rose with."""
    g = site()
    rr = rules(g, FusionConfig(gate_m=2.0, max_age_s=1.0))
    cams = {"cam": view("cam", T0, {41: (15.3, 15.0)})}
    events = []
    for i in range(3):
        t = T0 + i * 0.1
        events += rr.step(at(g, 1, t, 15.0, 15.0), t, cams)[1]   # seen by the camera
        events += rr.step(at(g, 2, t, 18.0, 18.0), t, cams)[1]   # in the dark
    for i in range(3, 6):
        t = T0 + i * 0.1
        events += rr.step(at(g, 1, t, 5.0, 15.0), t, {})[1]
    by = {(e.track_id, e.state.value): e for e in events}
    fused, dark = by[(1, "raised")], by[(2, "raised")]
    assert fused.source == "fused" and dark.source == "radar"
    assert fused.evidence.sources == ["radar:r1", "camera:cam"]
    assert (fused.evidence.camera_track, fused.evidence.radar_track) == (41, 1)
    assert fused.evidence.match_m == pytest.approx(0.3, abs=1e-3)
    assert fused.evidence.confidence is not None and dark.evidence.confidence == 0.7
    assert fused.evidence.confidence > dark.evidence.confidence
    cleared = by[(1, "cleared")]
    assert (cleared.id, cleared.source, cleared.evidence.camera_track) == (fused.id, "fused", 41)


def test_fusion_disabled_gives_radar_only() -> None:
    g = site()
    rr = rules(g, FusionConfig(enabled=False))
    cams = {"cam": view("cam", T0, {41: (15.0, 15.0)})}
    events = [e for i in range(3)
              for e in rr.step(at(g, 1, T0 + i * 0.1, 15.0, 15.0), T0 + i * 0.1, cams)[1]]
    assert [e.source for e in events] == ["radar"]


def _gt_boxes(path: Path) -> dict[int, list[tuple[int, list[float]]]]:
    frames: dict[int, list[tuple[int, list[float]]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        f = line.split(",")
        if float(f[6]) != 0:
            x, y, w, h = map(float, f[2:6])
            frames[int(f[0])].append((int(f[1]), [x, y, x + w, y + h]))
    return frames


def test_pets09_radar_and_camera_fuse_through_the_broker(
        tmp_path: Path, repo_root: Path, shared_data: Path,
        mqtt_broker: tuple[str, int]) -> None:
    """PETS09 frame by frame: the camera's ground-truth boxes go to ``on_tracks`` (projected
    through its calibration), the radar's view of the same people goes through the broker.
    Every person the camera sees raises a fused alarm matched to that person's camera track;
    people the camera is told to miss (odd ids) raise radar-only alarms."""
    text = (repo_root / "config" / "pets09_radar.yaml").read_text()
    site_id = unique("fuse")
    cfg = tmp_path / "site.yaml"
    cfg.write_text(text.replace("id: pets-campus", f"id: {site_id}"))
    worker = RadarWorker.from_config(load_config(cfg), host=mqtt_broker[0],
                                     port=mqtt_broker[1],
                                     metrics=RadarMetrics(CollectorRegistry()))
    radar = worker.site.radars["radar-1"]
    gt = shared_data / "mot15/PETS09-S2L1/gt/gt.txt"
    frames, boxes = read_world_tracks(gt), _gt_boxes(gt)
    got = Collector()
    worker.start(got)
    pub = Publisher(*mqtt_broker)
    prev: dict[int, tuple[float, float, float]] = {}
    rng = np.random.default_rng(0)
    sent = 0
    try:
        assert worker.wait_subscribed(10)
        for k, people in enumerate(frames):
            now = time.time()
            seen = [(tid, b) for tid, b in boxes[k + 1] if tid % 2 == 0]
            worker.on_tracks(Detections.create(
                np.asarray([b for _, b in seen]).reshape(-1, 4), None, None,
                [tid for tid, _ in seen], camera="pets09", frame=k + 1, time=now,
                frame_size=(768, 576)))
            for m in scan(people, radar, now, k / 7, prev, SimOptions(), rng):
                pub.send(radar.topic, m.to_json())
                sent += 1
            wait_until(lambda n=sent: worker.counts()["received"] == n and worker.idle(), 10,
                     f"frame {k + 1}")
    finally:
        pub.close()
        worker.stop()
    assert worker.counts().get("accepted") == sent
    raised = [a for a in got.alarms if a.state.value == "raised"]
    assert len(raised) >= 10
    for a in raised:
        person = a.evidence.radar_track - 100  # type: ignore[operator]
        if person % 2 == 0:
            assert a.source == "fused", a
            assert a.evidence.camera_track == person
            assert a.evidence.sources == ["radar:radar-1", "camera:pets09"]
            assert a.evidence.match_m is not None and a.evidence.match_m < 0.5
        else:
            assert a.source == "radar", a
    assert {a.source for a in raised} == {"fused", "radar"}
