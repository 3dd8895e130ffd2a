"""What a user would script instead, run on the same tracked detections.

``supervision_polygonzone``: ``sv.PolygonZone`` with the bottom-centre anchor, and the usual
script around it: an alarm whenever a track id is inside this frame and was not inside the
previous frame. No hysteresis, so one-frame flicker across the fence line re-alarms.
``ultralytics_regioncounter``: Ultralytics ``solutions.RegionCounter`` logic (see
``benchmarks/ultralytics_alt.py``) where that package is installed.
"""

from __future__ import annotations

import numpy as np
import supervision as sv

from benchmarks.entries import entry_alarm
from zones.alarm import Alarm
from zones.engine import CameraRules
from zones.tracks import Detections


def to_sv(d: Detections) -> sv.Detections:
    return sv.Detections(xyxy=d.boxes.astype(np.float32).reshape(-1, 4),
                         confidence=d.scores.astype(np.float32),
                         class_id=d.class_ids.astype(int),
                         tracker_id=d.track_ids.astype(int))


def supervision_polygonzone(rules: CameraRules, frames: list[Detections]
                            ) -> tuple[list[Alarm], dict[str, list[int]]]:
    """Entry alarms and per-frame counts per zone from ``sv.PolygonZone``."""
    alarms: list[Alarm] = []
    counts: dict[str, list[int]] = {z.fence.id: [] for z in rules.zones}
    zones = [(z, sv.PolygonZone(np.asarray(z.fence.points, dtype=np.int64),
                                triggering_anchors=(sv.Position.BOTTOM_CENTER,)))
             for z in rules.zones]
    inside_prev: dict[str, set[int]] = {z.fence.id: set() for z in rules.zones}
    for f in frames:
        det = to_sv(f)
        for z, pz in zones:
            mask = pz.trigger(det) if len(det) else np.zeros(0, dtype=bool)
            counts[z.fence.id].append(int(mask.sum()))
            now = {int(t) for t in f.track_ids[mask]}
            if "intrusion" in z.config.active_rules:
                alarms.extend(entry_alarm(f, int(i), z, "supervision")
                              for i in np.flatnonzero(mask)
                              if int(f.track_ids[i]) not in inside_prev[z.fence.id])
            inside_prev[z.fence.id] = now
    return alarms, counts
