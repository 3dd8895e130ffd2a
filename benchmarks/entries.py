"""The alarm a scripted alternative raises for one person entering one zone.

Kept apart from ``alternatives`` so the Ultralytics comparison does not import supervision.
"""

from __future__ import annotations

from zones.alarm import Alarm, AlarmKind, AlarmState, Evidence
from zones.engine import ZoneRules
from zones.tracks import Detections


def entry_alarm(f: Detections, i: int, zone: ZoneRules, source: str) -> Alarm:
    """The intrusion alarm an alternative raises for row ``i`` of frame ``f``."""
    tid = int(f.track_ids[i])
    x1, y1, x2, y2 = (float(v) for v in f.boxes[i])
    return Alarm.make(
        kind=AlarmKind.INTRUSION, state=AlarmState.RAISED, camera=f.camera,
        zone=zone.fence.id, zone_kind=zone.fence.kind, risk=zone.fence.risk,
        key=f"{source}:{tid}", first_frame=f.frame, first_time=f.time, frame=f.frame,
        time=f.time, track_id=tid, track_ids=[tid], profile=source,
        evidence=Evidence(boxes=[(x1, y1, x2, y2)]))
