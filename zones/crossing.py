"""Tripwires: a foot point that crosses a line segment, once per crossing.

Kept apart from the zone rules (``zones/rules.py``) because a crossing has no duration and no
episode: it is a change of side, confirmed for ``line_frames``, in the direction of the
tripwire's ``into`` point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zones.alarm import Alarm, AlarmKind, AlarmState, Evidence
from zones.band import EdgeBand
from zones.calibration import GroundPlane
from zones.config import HandoverConfig, HysteresisConfig
from zones.geometry import Fence, Tripwire
from zones.handover import Sighting, needs_appearance, pick, see
from zones.profiles import Thresholds
from zones.tracks import Detections, FloatArray


@dataclass
class _Side:
    seen: Sighting
    side: int = 0  # committed side: +1, -1, or 0 before the first confirmation
    anchor: tuple[float, float] = (0.0, 0.0)  # last foot point on the committed side
    armed: bool = True  # clear of the line's band since the last crossing
    crossed_at: float = -math.inf  # time of the last crossing
    pending: int = 0
    pending_frame: int = 0
    pending_time: float = 0.0


class LineCrossingRule:
    """A foot point that moves across a tripwire segment and stays over for ``line_frames``.

    The direction is the side it ends on, compared with the tripwire's ``into`` point. Points
    within ``deadband_px`` of the line are ignored, so a person walking along the line does not
    flap between sides. One event (``raised``) per crossing: a crossing has no duration.

    One person, one crossing: after a crossing the rule re-arms once the foot has been clear
    of the line's band (``zones/band.py``) on its new side, or ``exit_seconds`` have passed;
    until then a step back over only moves the committed side, silently, so a foot hovering
    on the line raises once. A track that breaks at the line (the tracker loses the person as
    they cross and picks them up on the far side under a new id) would see no crossing at all:
    a new track that continues a lost one (``zones/handover.py``: on its path, looking alike)
    takes over its side, so the crossing is raised (late, never twice).
    """

    kind = AlarmKind.LINE_CROSSING

    def __init__(self, camera: str, wire: Tripwire, fence: Fence, deadband_px: float = 2.0,
                 forget_after_s: float = 3.0, *, hysteresis: HysteresisConfig | None = None,
                 handover: HandoverConfig | None = None, ground: GroundPlane | None = None):
        self.camera = camera
        self.wire = wire
        self.fence = fence  # the zone the line guards: names the alarm's zone, kind and risk
        self.deadband_px = deadband_px
        self.forget_after_s = forget_after_s
        h = hysteresis if hysteresis is not None else HysteresisConfig()
        self.rearm_s = h.exit_seconds
        self.handover = handover if handover is not None else HandoverConfig()
        self.band = EdgeBand(h.band_m, h.band_heights, ground)
        self.state: dict[int, _Side] = {}

    @property
    def needs_appearance(self) -> bool:
        return needs_appearance(self.handover)

    def _track(self, tid: int, foot: tuple[float, float], t: float, height: float,
               look: FloatArray | None, present: set[int]) -> _Side:
        """This track's state; a new track continues a lost one it is the same person as."""
        st = self.state.get(tid)
        if st is not None:
            see(st.seen, foot, t, height, look)
            return st
        st = self.state[tid] = _Side(Sighting(foot, t, height, look=look))
        lost = [(o, s.seen) for o, s in self.state.items() if o not in present and s.side]
        donor = pick(self.handover, st.seen, t, lost)
        if donor is not None:
            old = self.state.pop(donor)
            st.side, st.anchor, st.armed, st.crossed_at = (old.side, old.anchor, old.armed,
                                                           old.crossed_at)
        return st

    def step(self, tracks: Detections, th: Thresholds, profile: str = "default") -> list[Alarm]:
        events: list[Alarm] = []
        feet = tracks.foot_points
        heights = tracks.boxes[:, 3] - tracks.boxes[:, 1]
        dist = self.wire.signed_distance(feet)
        clear = self.band.clear_of_line(self.wire, feet, heights, dist)
        t = tracks.time
        ids = tracks.track_ids.tolist()
        present = set(ids)
        app = tracks.appearance
        for i, tid in enumerate(ids):
            p = (float(feet[i, 0]), float(feet[i, 1]))
            st = self._track(tid, p, t, float(heights[i]), None if app is None else app[i],
                             present)
            if abs(dist[i]) < self.deadband_px:
                continue
            s = 1 if dist[i] > 0 else -1
            if st.side in (0, s):
                st.side, st.anchor, st.pending = s, p, 0
                st.armed = st.armed or bool(clear[i])
                continue
            if not (st.armed or t - st.crossed_at >= self.rearm_s):
                # Back over from within the band, just after a crossing: hovering.
                st.side, st.anchor, st.pending, st.armed = s, p, 0, bool(clear[i])
                continue
            if st.pending == 0:
                st.pending_frame, st.pending_time = tracks.frame, t
            st.pending += 1
            if st.pending < th.line_frames:
                continue
            if self.wire.crosses_segment(np.asarray(st.anchor), np.asarray(p)):
                events.extend(self._crossed(tracks, i, tid, st, s, profile))
                st.armed, st.crossed_at = bool(clear[i]), t
            st.side, st.anchor, st.pending = s, p, 0
        for tid in [k for k, s_ in self.state.items()
                    if t - s_.seen.time > self.forget_after_s]:
            del self.state[tid]
        return events

    def _crossed(self, tracks: Detections, i: int, tid: int, st: _Side, side: int,
                 profile: str) -> list[Alarm]:
        if self.wire.alarmed_sign not in (0, side):
            return []
        box = tuple(float(v) for v in tracks.boxes[i])
        return [Alarm.make(
            kind=self.kind, state=AlarmState.RAISED, camera=self.camera,
            zone=self.fence.id, zone_kind=self.fence.kind, risk=self.fence.risk,
            key=f"line:{self.wire.id}:track:{tid}", first_frame=st.pending_frame,
            first_time=st.pending_time, frame=tracks.frame, time=tracks.time, track_id=tid,
            track_ids=[tid], profile=profile,
            evidence=Evidence(boxes=[box], scores=[float(tracks.scores[i])],
                              line=self.wire.id),
        )]
