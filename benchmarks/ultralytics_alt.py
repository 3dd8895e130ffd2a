"""What an Ultralytics user would script instead: ``solutions`` on our own tracked detections.

The real Ultralytics code decides everything; only the tracker is swapped. Each solution's
``extract_tracks`` (``ultralytics/solutions/solutions.py``, ``BaseSolution.extract_tracks``)
normally runs ``model.track`` on the frame; the subclasses here override only that method to
load the frame's rows from our ``Detections`` (tracked rows only, track id -1 dropped, the same
rows ``CameraRules.step`` reads) into the attributes it would set (``boxes`` an (N, 4) xyxy
tensor, ``clss``, ``track_ids``, ``confs``), then retire ids as its tracker would (below).
The solutions are then called per frame exactly as a user calls them: ``solution(frame)``.

* Intrusion alarms: one ``solutions.ObjectCounter`` per zone whose ``active_rules`` include
  ``intrusion``, with ``region=`` the fence polygon. ``ObjectCounter.process`` stores each
  track's history (``BaseSolution.store_tracking_history``) and calls
  ``ObjectCounter.count_objects``, which for a polygon counts a track when its current point is
  inside the region (``shapely`` ``contains``), or when the segment from its previous point
  ``crosses`` the region from a previous point outside it; the count is IN or OUT by a rule on
  the region's shape (below). An alarm is raised each time ``count_objects`` counts a track in
  a zone, whether as IN or OUT (``entries="any"``, the default: for a polygon both mean "came
  into the region"); ``entries="in"`` keeps only the IN counts, i.e. what a script watching
  ``in_count`` would see.
* Per-frame counts: one ``solutions.RegionCounter`` holding every zone (named by zone id) gives
  ``region_counts`` per frame (``RegionCounter.process``).

Which point is tested: the box centre, in both solutions, not the bottom centre (foot point)
our rules and the supervision alternative use. ``store_tracking_history`` appends
``box.reshape(-1, 2).mean(dim=0)`` (the centre), and ``count_objects`` tests the last of those;
``RegionCounter.process`` tests ``((x0 + x1) / 2, (y0 + y1) / 2)``. A person whose feet are in
a ground zone but whose body centre is not (zones near their top edge, or small zones) is
missed; one standing just outside the far edge can be counted.

Known behaviours of this logic (``ultralytics`` 8.4.190, ``solutions/object_counter.py``):

* No entry on the first sighting: ``count_objects`` returns while ``prev_position`` is None,
  i.e. on a track's first frame. A track already inside on its first frame is counted on its
  second frame (if still inside), so the alarm comes one frame late.
* Once per track id: ``count_objects`` returns early for ids in ``counted_ids``, so a track that
  leaves and re-enters while still tracked is not counted again (missed re-entries); a counted
  id leaves ``counted_ids`` only through ``forget_tracks``, when the tracker retires the id.
  The real trackers (``trackers/track_tracker.py``, ``trackers/byte_tracker.py``) retire a
  track once ``frame_id - end_frame > track_buffer`` (30 frames in the default
  ``tracktrack.yaml``) and never reuse its id; ours may keep an id across a longer gap (ground
  truth always does), so an id unseen for more than ``track_buffer`` frames is handed to
  ``forget_tracks`` here, as the Ultralytics tracker would have done: it can count again.
* No hysteresis, no minimum number of frames inside, no exit event: one centre crossing the
  edge counts at once, and nothing says when the person has left.
* IN vs OUT follows the region's shape, not the motion: for a region wider than tall (or
  square) only vertical motion is looked at (moving down = IN, anything else = OUT); for a
  taller region only horizontal motion (moving right = IN). So with ``entries="in"`` walking
  into a square zone from below, or sideways, is never an IN.
* A track whose straight step from outside passes across the region counts even if neither
  end lies inside (``crosses``), as a fast walker skipping over a thin band.
* ``RegionCounter`` counts the centres inside each region this frame; a box in two
  overlapping regions counts in both.

No weights and no network: ``BaseSolution.__init__`` builds ``YOLO(model)`` and would fetch
``yolo26n.pt`` when no model is named. A random-weight model is built once from Ultralytics'
own ``yolo11n.yaml`` (nothing downloaded or written) and handed to every solution; it never
runs, since ``extract_tracks`` is replaced. ``YOLO_OFFLINE``/``YOLO_AUTOINSTALL`` are set
before ``ultralytics`` is imported (forced off afterwards if it was imported earlier).
``check_imshow`` (which would pop a test window where ``DISPLAY`` is set) is stubbed out while
the solutions are built, and their config log line is silenced; ``show=False``.

Drawing: ``process`` also draws boxes, labels and regions with OpenCV. That code is left as
is (it is part of what a user runs) but draws on a small blank canvas, so its cost stays
small; it never looks up a font (``Annotator`` uses PIL, hence ``check_font`` and a possible
``Arial.ttf`` download, only for PIL images or non-ASCII labels, and neither occurs here).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Literal
from unittest import mock

os.environ.update({"YOLO_OFFLINE": "true", "YOLO_AUTOINSTALL": "false"})

import numpy as np
import torch
import ultralytics.utils as ul_utils
from ultralytics.models import YOLO
from ultralytics.solutions import ObjectCounter, RegionCounter
from ultralytics.solutions import solutions as ul_solutions
from ultralytics.solutions.config import SolutionConfig
from ultralytics.utils import YAML, checks

from benchmarks.entries import entry_alarm
from edge.detection.ultra import offline_ultralytics
from zones.alarm import Alarm
from zones.engine import CameraRules, ZoneRules
from zones.tracks import UNTRACKED, Detections

offline_ultralytics()  # OpenCV threads back to normal after ultralytics' import changed them

MODEL_YAML = "yolo11n.yaml"  # Ultralytics' own architecture file: random weights, no download
CANVAS = (64, 64)  # (width, height) of the blank frame the solutions draw on
Entries = Literal["any", "in"]


@lru_cache(maxsize=1)
def _model() -> YOLO:
    return YOLO(MODEL_YAML)


@contextmanager
def _quiet_construction() -> Iterator[None]:
    """No imshow probe window and no config dump while a solution is built."""
    level = ul_utils.LOGGER.level
    ul_utils.LOGGER.setLevel(logging.ERROR)
    try:
        with mock.patch.object(ul_solutions, "check_imshow", lambda warn=False: False):
            yield
    finally:
        ul_utils.LOGGER.setLevel(level)


class _FedTracks:
    """Replaces ``BaseSolution.extract_tracks``: our tracks in, the attributes it sets out.

    Retires an id (``forget_tracks``) once it has been unseen for more than ``track_buffer``
    calls, as the Ultralytics tracker does with ``removed_stracks_frame``.
    """

    track_buffer: int
    feed: Detections | None
    calls: int
    last_seen: dict[int, int]
    boxes: Any
    clss: list[float]
    track_ids: list[int]
    confs: list[float]
    tracks: Any
    track_data: Any
    names: dict[int, str]
    profilers: tuple[Any, Any]
    forget_tracks: Callable[[list[int]], None]  # the solution's own (annotation only)

    def _init_feed(self, track_buffer: int) -> None:
        self.track_buffer = track_buffer
        self.feed = None
        self.calls = 0
        self.last_seen = {}

    def extract_tracks(self, im0: Any) -> None:
        assert self.feed is not None, "set .feed before calling the solution"
        with self.profilers[0]:  # the "track" timer, as in the original
            d = self.feed.select(self.feed.track_ids != UNTRACKED)
            self.tracks = self.track_data = None
            self.boxes = torch.as_tensor(d.boxes, dtype=torch.float32).reshape(-1, 4)
            self.clss = [float(c) for c in d.class_ids]  # floats, as ``cls.tolist()`` gives
            self.track_ids = [int(t) for t in d.track_ids]
            self.confs = [float(s) for s in d.scores]
        self.calls += 1
        for tid in self.track_ids:
            self.last_seen[tid] = self.calls
        retired = [t for t, k in self.last_seen.items() if self.calls - k > self.track_buffer]
        for tid in retired:
            del self.last_seen[tid]
        self.forget_tracks(retired)


class FedObjectCounter(_FedTracks, ObjectCounter):  # type: ignore[misc]
    """``ObjectCounter`` on our tracks; ``counted`` lists this frame's (track id, IN/OUT)."""

    def __init__(self, track_buffer: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init_feed(track_buffer)
        self.counted: list[tuple[int, str]] = []

    def count_objects(self, current_centroid: tuple[float, float], track_id: int,
                      prev_position: tuple[float, float] | None, cls: int) -> None:
        before = (self.in_count, self.out_count)
        super().count_objects(current_centroid, track_id, prev_position, cls)
        if self.in_count != before[0]:
            self.counted.append((track_id, "IN"))
        elif self.out_count != before[1]:
            self.counted.append((track_id, "OUT"))


class FedRegionCounter(_FedTracks, RegionCounter):  # type: ignore[misc]
    """``RegionCounter`` on our tracks."""

    def __init__(self, track_buffer: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init_feed(track_buffer)


def _names(frames: Sequence[Detections]) -> dict[int, str]:
    """Class names for every class id present (labels only; the model's are '0'..'79')."""
    names = {int(k): str(v) for k, v in _model().names.items()}
    for f in frames:
        for c in np.unique(f.class_ids):
            names.setdefault(int(c), str(int(c)))
    return names


def _track_buffer(tracker_yaml: str) -> int:
    cfg = YAML.load(checks.check_yaml(tracker_yaml))  # type: ignore[no-untyped-call]
    return int(cfg["track_buffer"])


def _polygon(z: ZoneRules) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in z.fence.points]


def ultralytics_regioncounter(rules: CameraRules, frames: list[Detections], *,
                              entries: Entries = "any"
                              ) -> tuple[list[Alarm], dict[str, list[int]]]:
    """Entry alarms (``ObjectCounter``) and per-frame counts per zone (``RegionCounter``)."""
    alarms: list[Alarm] = []
    counts: dict[str, list[int]] = {z.fence.id: [] for z in rules.zones}
    if not rules.zones:
        return alarms, counts
    names = _names(frames)
    common: dict[str, Any] = {"model": _model(), "show": False, "verbose": False}
    buffer = _track_buffer(SolutionConfig().tracker)
    with _quiet_construction():
        region = FedRegionCounter(buffer, region={z.fence.id: _polygon(z) for z in rules.zones},
                                  **common)
        counters = [(z, FedObjectCounter(buffer, region=_polygon(z), **common))
                    for z in rules.zones if "intrusion" in z.config.active_rules]
    for sol in (region, *(c for _, c in counters)):
        sol.names = names
    canvas = np.zeros((CANVAS[1], CANVAS[0], 3), dtype=np.uint8)
    for f in frames:
        region.feed = f
        result = region(canvas)
        for z in rules.zones:
            counts[z.fence.id].append(int(result.region_counts.get(z.fence.id, 0)))
        for z, oc in counters:
            oc.feed = f
            oc.counted = []
            oc(canvas)
            for tid, direction in oc.counted:
                if entries == "in" and direction != "IN":
                    continue
                i = int(np.flatnonzero(f.track_ids == tid)[0])
                alarms.append(entry_alarm(f, i, z, "ultralytics"))
    return alarms, counts
