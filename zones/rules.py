"""Fence rules: small stateful objects with one pure ``step`` per frame.

Each rule sees the tracked people of one frame and returns alarm events. Hysteresis in frames
(confirm entry, confirm exit) stops a box that flickers across a fence line from raising an
alarm per frame; time comes from frame timestamps, never the wall clock, so replays are exact.
Per-track state is dropped once a track has not been seen for ``forget_after_s``: a process
that runs for months must not grow with every person who ever walked past.

When the tracker loses a person inside a fence and picks them up again under a new id (an
identity switch in a crowd or behind a post), the new track would confirm a second entry and
cry wolf. A confirmed episode of a track that vanished within ``forget_after_s`` is therefore
handed over to a new track that appears inside the fence (it never walked in) within one body
height of where the vanished track was last seen: the alarm follows the person, its id stays
the same, and ``track_ids`` lists both ids. A track that walks in is always a new entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from zones.alarm import Alarm, AlarmKind, AlarmState, Evidence
from zones.geometry import Fence, Tripwire
from zones.profiles import Thresholds
from zones.tracks import Detections


@dataclass
class _Presence:
    """One track's relation to one fence."""

    last_seen: float
    inside_run: int = 0
    outside_run: int = 0
    run_frame: int = 0  # first frame of the current inside run
    run_time: float = 0.0
    episode: bool = False  # inside and not yet confirmed out
    episode_frame: int = 0
    episode_time: float = 0.0
    confirmed: bool = False  # entry confirmed (intrusion raised)
    dwell_raised: bool = False
    entry_frame: int = 0
    entry_time: float = 0.0
    foot: tuple[float, float] = (0.0, 0.0)  # where the track was last seen
    owner: int | None = None  # track whose id keys the alarm (after a handover)
    ids: list[int] = field(default_factory=list)  # every track id the episode went through
    seen_outside: bool = False  # a track that walked in is a new entry, never a handover


class ZoneRule:
    """Shared per-track bookkeeping for rules that test foot points against one fence."""

    kind: AlarmKind

    def __init__(self, camera: str, fence: Fence, forget_after_s: float = 3.0,
                 handover_reach: float = 1.0):
        self.camera = camera
        self.fence = fence
        self.forget_after_s = forget_after_s
        self.handover_reach = handover_reach  # in body heights; 0 disables handover
        self.state: dict[int, _Presence] = {}

    def _event(self, state: AlarmState, tid: int, st: _Presence, first_frame: int,
               first_time: float, tracks: Detections, profile: str,
               evidence: Evidence) -> Alarm:
        owner = st.owner if st.owner is not None else tid
        return Alarm.make(
            kind=self.kind, state=state, camera=self.camera, zone=self.fence.id,
            zone_kind=self.fence.kind, risk=self.fence.risk, key=f"track:{owner}",
            first_frame=first_frame, first_time=first_time, frame=tracks.frame,
            time=tracks.time, track_id=tid, track_ids=st.ids or [tid], profile=profile,
            evidence=evidence,
        )

    def _handover(self, tid: int, st: _Presence, present: set[int], reach: float) -> bool:
        """Continue the confirmed episode of a track that vanished near this spot."""
        if st.seen_outside or reach <= 0:
            return False
        best: tuple[float, int] | None = None
        for other, o in self.state.items():
            if other in present or not o.confirmed:
                continue
            d = ((o.foot[0] - st.foot[0]) ** 2 + (o.foot[1] - st.foot[1]) ** 2) ** 0.5
            if d <= reach and (best is None or d < best[0]):
                best = (d, other)
        if best is None:
            return False
        donor = self.state.pop(best[1])
        st.episode, st.confirmed, st.dwell_raised = True, True, donor.dwell_raised
        st.episode_frame, st.episode_time = donor.episode_frame, donor.episode_time
        st.entry_frame, st.entry_time = donor.entry_frame, donor.entry_time
        st.owner = donor.owner if donor.owner is not None else best[1]
        st.ids = [*(donor.ids or [best[1]]), tid]
        return True

    def step(self, tracks: Detections, th: Thresholds, profile: str = "default") -> list[Alarm]:
        """Advance one frame; return the events it produced."""
        events: list[Alarm] = []
        inside = self.fence.contains(tracks.foot_points)
        t = tracks.time
        ids = tracks.track_ids.tolist()
        present = set(ids)
        for i, tid in enumerate(ids):
            st = self.state.get(tid)
            if st is None:
                st = self.state[tid] = _Presence(last_seen=t)
            st.last_seen = t
            box = tuple(float(v) for v in tracks.boxes[i])
            st.foot = ((box[0] + box[2]) / 2.0, box[3])
            ev = Evidence(boxes=[box], scores=[float(tracks.scores[i])])
            if inside[i]:
                events.extend(self._inside(tid, st, tracks, th, profile, ev, present,
                                           box[3] - box[1]))
            else:
                st.seen_outside = True
                st.inside_run = 0
                st.outside_run += 1
                if st.episode and st.outside_run >= th.exit_frames:
                    events.extend(self._end(tid, st, tracks, profile, "left the zone"))
        for tid in [k for k, s in self.state.items() if t - s.last_seen > self.forget_after_s]:
            events.extend(self._end(tid, self.state.pop(tid), tracks, profile, "track lost"))
        return events

    def _inside(self, tid: int, st: _Presence, tracks: Detections, th: Thresholds,
                profile: str, ev: Evidence, present: set[int], height: float) -> list[Alarm]:
        """A frame with the foot point inside: confirm the entry once the hysteresis holds."""
        f, t = tracks.frame, tracks.time
        if st.inside_run == 0:
            st.run_frame, st.run_time = f, t
        if not st.episode:
            st.episode, st.episode_frame, st.episode_time = True, f, t
        st.inside_run += 1
        st.outside_run = 0
        events: list[Alarm] = []
        entered = (not st.confirmed and st.inside_run >= th.intrusion_frames
                   and t - st.run_time >= th.intrusion_seconds)
        if entered and not self._handover(tid, st, present, self.handover_reach * height):
            st.confirmed = True
            st.entry_frame, st.entry_time = st.run_frame, st.run_time
            events.extend(self.on_confirm(tid, st, tracks, th, profile, ev))
        if st.confirmed:
            events.extend(self.on_inside(tid, st, tracks, th, profile, ev))
        return events

    def _end(self, tid: int, st: _Presence, tracks: Detections, profile: str,
             reason: str) -> list[Alarm]:
        out = self.on_exit(tid, st, tracks, profile, Evidence(reason=reason))
        st.episode = st.confirmed = st.dwell_raised = False
        st.owner, st.ids = None, []
        return out

    def on_confirm(self, tid: int, st: _Presence, tracks: Detections, th: Thresholds,
                   profile: str, ev: Evidence) -> list[Alarm]:
        return []

    def on_inside(self, tid: int, st: _Presence, tracks: Detections, th: Thresholds,
                  profile: str, ev: Evidence) -> list[Alarm]:
        return []

    def on_exit(self, tid: int, st: _Presence, tracks: Detections, profile: str,
                ev: Evidence) -> list[Alarm]:
        return []


class IntrusionRule(ZoneRule):
    """A person's foot point inside the fence for N frames and T seconds: one alarm per entry."""

    kind = AlarmKind.INTRUSION

    def on_confirm(self, tid: int, st: _Presence, tracks: Detections, th: Thresholds,
                   profile: str, ev: Evidence) -> list[Alarm]:
        return [self._event(AlarmState.RAISED, tid, st, st.entry_frame, st.entry_time, tracks,
                            profile, ev)]

    def on_exit(self, tid: int, st: _Presence, tracks: Detections, profile: str,
                ev: Evidence) -> list[Alarm]:
        if not st.confirmed:
            return []
        return [self._event(AlarmState.CLEARED, tid, st, st.entry_frame, st.entry_time, tracks,
                            profile, ev)]


class DwellRule(ZoneRule):
    """A person inside the fence for ``dwell_seconds`` (brief exits shorter than the exit
    hysteresis do not restart the clock): loitering at a cliff edge or a water line."""

    kind = AlarmKind.DWELL

    def on_inside(self, tid: int, st: _Presence, tracks: Detections, th: Thresholds,
                  profile: str, ev: Evidence) -> list[Alarm]:
        stayed = tracks.time - st.episode_time
        if st.dwell_raised or stayed < th.dwell_seconds:
            return []
        st.dwell_raised = True
        ev = ev.model_copy(update={"dwell_s": round(stayed, 3)})
        return [self._event(AlarmState.RAISED, tid, st, st.episode_frame, st.episode_time,
                            tracks, profile, ev)]

    def on_exit(self, tid: int, st: _Presence, tracks: Detections, profile: str,
                ev: Evidence) -> list[Alarm]:
        if not st.dwell_raised:
            return []
        ev = ev.model_copy(update={"dwell_s": round(st.last_seen - st.episode_time, 3)})
        return [self._event(AlarmState.CLEARED, tid, st, st.episode_frame, st.episode_time,
                            tracks, profile, ev)]


@dataclass
class _Side:
    last_seen: float
    side: int = 0  # committed side: +1, -1, or 0 before the first confirmation
    anchor: tuple[float, float] = (0.0, 0.0)  # last foot point on the committed side
    pending: int = 0
    pending_frame: int = 0
    pending_time: float = 0.0


class LineCrossingRule:
    """A foot point that moves across a tripwire segment and stays over for ``line_frames``.

    The direction is the side it ends on, compared with the tripwire's ``into`` point. Points
    within ``deadband_px`` of the line are ignored, so a person walking along the line does not
    flap between sides. One event (``raised``) per crossing: a crossing has no duration.
    """

    kind = AlarmKind.LINE_CROSSING

    def __init__(self, camera: str, wire: Tripwire, fence: Fence, deadband_px: float = 2.0,
                 forget_after_s: float = 3.0):
        self.camera = camera
        self.wire = wire
        self.fence = fence  # the zone the line guards: names the alarm's zone, kind and risk
        self.deadband_px = deadband_px
        self.forget_after_s = forget_after_s
        self.state: dict[int, _Side] = {}

    def step(self, tracks: Detections, th: Thresholds, profile: str = "default") -> list[Alarm]:
        events: list[Alarm] = []
        feet = tracks.foot_points
        dist = self.wire.signed_distance(feet)
        t, want = tracks.time, self.wire.alarmed_sign
        for i, tid in enumerate(tracks.track_ids.tolist()):
            st = self.state.get(tid)
            if st is None:
                st = self.state[tid] = _Side(last_seen=t)
            st.last_seen = t
            if abs(dist[i]) < self.deadband_px:
                continue
            s = 1 if dist[i] > 0 else -1
            p = (float(feet[i, 0]), float(feet[i, 1]))
            if st.side in (0, s):
                st.side, st.anchor, st.pending = s, p, 0
                continue
            if st.pending == 0:
                st.pending_frame, st.pending_time = tracks.frame, t
            st.pending += 1
            if st.pending < th.line_frames:
                continue
            crossed = self.wire.crosses_segment(np.asarray(st.anchor), np.asarray(p))
            if crossed and want in (0, s):
                box = tuple(float(v) for v in tracks.boxes[i])
                events.append(Alarm.make(
                    kind=self.kind, state=AlarmState.RAISED, camera=self.camera,
                    zone=self.fence.id, zone_kind=self.fence.kind, risk=self.fence.risk,
                    key=f"line:{self.wire.id}:track:{tid}", first_frame=st.pending_frame,
                    first_time=st.pending_time, frame=tracks.frame, time=t, track_id=tid,
                    track_ids=[tid], profile=profile,
                    evidence=Evidence(boxes=[box], scores=[float(tracks.scores[i])],
                                      line=self.wire.id),
                ))
            st.side, st.anchor, st.pending = s, p, 0
        for tid in [k for k, s_ in self.state.items() if t - s_.last_seen > self.forget_after_s]:
            del self.state[tid]
        return events
