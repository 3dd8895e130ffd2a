"""The Ultralytics ``solutions`` alternative (benchmarks/ultralytics_alt.py) on synthetic tracks.

A 100x100 frame with one square zone (30..70 in x and y). Boxes are 10 wide and 20 tall, so
the tested point (Ultralytics uses the box centre) is ``(cx, cy)`` and the foot point
``(cx, cy + 10)``; both lie on the same side of the fence in every scenario here. The frame
numbers asserted are the ones Ultralytics' logic gives, explained next to each assertion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from tests.support.netaudit import AUDIT_PRELUDE
from zones.config import ZoneConfig
from zones.engine import CameraRules
from zones.geometry import ZoneKind
from zones.profiles import Schedule
from zones.tracks import Detections

pytestmark = pytest.mark.ultralytics

# Before the first import of ultralytics, which otherwise checks it is online (a DNS lookup).
os.environ.update({"YOLO_OFFLINE": "true", "YOLO_AUTOINSTALL": "false"})
pytest.importorskip("ultralytics", reason="needs the ultralytics extra")

from benchmarks.ultralytics_alt import ultralytics_regioncounter  # noqa: E402
from tests.support.services import REPO_ROOT as REPO  # noqa: E402

SIZE = (100, 100)
FPS = 10.0
Point = tuple[float, float] | None  # box centre; None = not seen in that frame


def rules(kind: ZoneKind = ZoneKind.CLIFF) -> CameraRules:
    zone = ZoneConfig(id="edge", kind=kind, polygon=[(30, 30), (70, 30), (70, 70), (30, 70)],
                      coords="pixels")
    return CameraRules("cam", [zone], SIZE, Schedule([]))


def frames(paths: Mapping[int, Sequence[Point]]) -> list[Detections]:
    """One Detections per frame (1-based), a 10x20 box per track centred on its point."""
    n = max(len(p) for p in paths.values())
    out = []
    for k in range(n):
        rows = [(tid, pt) for tid, p in paths.items() if k < len(p) and (pt := p[k]) is not None]
        boxes = [(x - 5, y - 10, x + 5, y + 10) for _, (x, y) in rows]
        out.append(Detections.create(np.asarray(boxes, dtype=float).reshape(-1, 4),
                                     track_ids=[tid for tid, _ in rows], camera="cam",
                                     frame=k + 1, time=k / FPS, frame_size=SIZE))
    return out


# Track 1: frames 1-6 walk right outside the zone (x 2..27), 7-14 inside (x 32, then 50),
# 15-20 outside again (x 80). Track 2: stands outside the whole time.
WALKER: list[Point] = [(2.0 + 5 * k, 50.0) for k in range(7)]
WALKER += [(50.0, 50.0)] * 7 + [(80.0, 50.0)] * 6
STANDER: list[Point] = [(90.0, 10.0)] * len(WALKER)


def test_one_alarm_when_the_walker_enters() -> None:
    tracks = frames({1: WALKER, 2: STANDER})
    alarms, counts = ultralytics_regioncounter(rules(), tracks)
    # ObjectCounter counts the walker on frame 7, its first frame with the centre inside
    # (x = 32): it has a previous position (frame 6), so nothing delays the count.
    assert [(a.track_id, a.frame, a.zone) for a in alarms] == [(1, 7, "edge")]
    (a,) = alarms
    assert a.kind.value == "intrusion" and a.state.value == "raised"
    assert a.evidence.boxes == [(27.0, 40.0, 37.0, 60.0)]
    assert a.first_frame == 7 and a.time == pytest.approx(0.6)
    # RegionCounter: the walker's centre is inside on frames 7-14, the stander never is.
    assert counts == {"edge": [0] * 6 + [1] * 8 + [0] * 6}


def test_sideways_entry_into_a_square_zone_is_an_out() -> None:
    """Direction comes from the region's shape: a square zone only looks at vertical motion,
    so a walker entering sideways is counted OUT, and ``entries="in"`` never alarms."""
    alarms, _ = ultralytics_regioncounter(rules(), frames({1: WALKER}), entries="in")
    assert alarms == []
    down = [(50.0, 2.0 + 5 * k) for k in range(7)]  # walking down into the zone: IN
    alarms, _ = ultralytics_regioncounter(rules(), frames({1: down}), entries="in")
    assert [(a.track_id, a.frame) for a in alarms] == [(1, 7)]


def test_reentry_of_a_tracked_id_is_not_counted_again() -> None:
    """``counted_ids`` holds the walker after its first entry: walking back in is missed."""
    back_in: list[Point] = [(50.0, 50.0)] * 5
    alarms, counts = ultralytics_regioncounter(rules(), frames({1: WALKER + back_in}))
    assert [a.frame for a in alarms] == [7]
    assert counts["edge"][-5:] == [1] * 5


def test_id_retired_after_track_buffer_counts_again() -> None:
    """An id unseen for more than track_buffer (30) frames is retired (``forget_tracks``), as
    the Ultralytics tracker would have retired it, and counts again when it comes back."""
    gap_31: list[Point] = [None] * 31  # last seen frame 20: retired at frame 20 + 31 = 51
    again: list[Point] = [(20.0, 50.0), (50.0, 50.0)]
    alarms, _ = ultralytics_regioncounter(rules(), frames({1: WALKER + gap_31 + again}))
    assert [a.frame for a in alarms] == [7, 53]
    gap_30: list[Point] = [None] * 30  # not retired yet: the id is still counted
    alarms, _ = ultralytics_regioncounter(rules(), frames({1: WALKER + gap_30 + again}))
    assert [a.frame for a in alarms] == [7]


def test_first_sighting_inside_counts_on_the_second_frame() -> None:
    """``count_objects`` needs a previous position: a track born inside counts one frame late,
    and one seen inside for a single frame never counts (RegionCounter does count it)."""
    alarms, counts = ultralytics_regioncounter(
        rules(), frames({1: [(50.0, 50.0)] * 3, 2: [None, (40.0, 40.0)]}))
    assert [(a.track_id, a.frame) for a in alarms] == [(1, 2)]
    assert counts == {"edge": [1, 2, 1]}


def test_zone_without_intrusion_rule_counts_but_never_alarms() -> None:
    alarms, counts = ultralytics_regioncounter(rules(ZoneKind.CROWD), frames({1: WALKER}))
    assert alarms == []
    assert sum(counts["edge"]) == 8


def test_untracked_rows_are_ignored() -> None:
    f = Detections.create([(45, 40, 55, 60)], camera="cam", frame=1, frame_size=SIZE)
    alarms, counts = ultralytics_regioncounter(rules(), [f, f])
    assert alarms == [] and counts == {"edge": [0, 0]}


NO_NETWORK_PROBE = AUDIT_PRELUDE + """
from benchmarks.ultralytics_alt import ultralytics_regioncounter  # first: it must set the env
from tests.unit.test_ultralytics_alt import STANDER, WALKER, frames, rules
alarms, counts = ultralytics_regioncounter(rules(), frames({1: WALKER, 2: STANDER}))
assert len(alarms) == 1, alarms
print(json.dumps(events))
"""


def test_no_weights_no_network_no_files(tmp_path: Path) -> None:
    """A fresh interpreter without the offline variables, with an audit hook recording every
    socket, URL and pip/uv/apt process: none, no download, and nothing written to the cwd
    (no ``yolo11n.pt``/``yolo26n.pt``, no ``Arial.ttf``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("YOLO_OFFLINE", "YOLO_AUTOINSTALL")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", NO_NETWORK_PROBE], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
    assert "download" not in proc.stderr.lower() and "autoupdate" not in proc.stderr.lower()
    assert list(tmp_path.iterdir()) == []
