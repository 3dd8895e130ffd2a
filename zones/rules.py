"""Fence rules: small stateful objects with one pure ``step`` per frame.

Each rule sees the tracked people of one frame and returns alarm events. Time comes from frame
timestamps, never the wall clock, so replays are exact. Per-track state is dropped once a
track has not been seen for ``forget_after_s``: a process that runs for months must not grow
with every person who ever walked past.

One person, one alarm per entry:

* **Hysteresis in time**: an entry is confirmed after ``intrusion_frames`` and
  ``intrusion_seconds`` inside; it ends after ``exit_frames`` *and* ``exit_seconds`` clearly
  out (``zones.config.HysteresisConfig``), so a person stepping back for a moment keeps one
  alarm, at 7 frames/s as at 25.
* **Hysteresis in space**: a foot point inside (or on) the edge is inside; outside, it counts as
  out only beyond a band around the edge (``zones/band.py``: metres where calibrated, else body
  heights). Within the band it holds: no frame counts towards leaving (the exit clock runs
  on) and an entry's run is not broken. A foot hovering on the line therefore raises once.
* **Re-association**: when the tracker loses a person inside a fence and picks them up again
  under a new id, the new track would confirm a second entry. A confirmed episode of a track
  that vanished within ``forget_after_s`` is handed over to a new track that appears inside
  (it never walked in) on the lost person's path and, where the edge computes it, looking
  alike (``zones/handover.py``): the alarm follows the person, its id stays the same, and
  ``track_ids`` lists both ids. A track that walked in is always a new entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zones.alarm import Alarm, AlarmKind, AlarmState, Evidence
from zones.band import EdgeBand
from zones.calibration import GroundPlane
from zones.config import HandoverConfig, HysteresisConfig
from zones.geometry import Fence
from zones.handover import Sighting, needs_appearance, pick, see
from zones.profiles import Thresholds
from zones.tracks import Detections

# A rule told to keep no hysteresis and hand nothing over (radar tracks: stable ids, no box).
NO_HYSTERESIS = HysteresisConfig(band_m=0.0, band_heights=0.0, exit_seconds=0.0)
NO_HANDOVER = HandoverConfig(reach_heights=0.0, appearance=False)


def evidence(tracks: Detections, i: int) -> Evidence:
    """Person ``i``'s box and score, built only for an event (not every frame)."""
    box = tuple(float(v) for v in tracks.boxes[i])
    return Evidence(boxes=[box], scores=[float(tracks.scores[i])])


@dataclass
class _Presence:
    """One track's relation to one fence."""

    seen: Sighting
    inside_run: int = 0
    outside_run: int = 0  # consecutive frames clearly out
    out_since: float = 0.0  # time of the first of them
    run_frame: int = 0  # first frame of the current inside run
    run_time: float = 0.0
    episode: bool = False  # inside and not yet confirmed out
    episode_frame: int = 0
    episode_time: float = 0.0
    confirmed: bool = False  # entry confirmed (intrusion raised)
    dwell_raised: bool = False
    entry_frame: int = 0
    entry_time: float = 0.0
    owner: int | None = None  # track whose id keys the alarm (after a handover)
    ids: list[int] = field(default_factory=list)  # every track id the episode went through
    seen_outside: bool = False  # a track that walked in is a new entry, never a handover


class ZoneRule:
    """Shared per-track bookkeeping for rules that test foot points against one fence."""

    kind: AlarmKind

    def __init__(self, camera: str, fence: Fence, forget_after_s: float = 3.0, *,
                 hysteresis: HysteresisConfig | None = None,
                 handover: HandoverConfig | None = None, ground: GroundPlane | None = None):
        self.camera = camera
        self.fence = fence
        self.forget_after_s = forget_after_s
        self.hysteresis = hysteresis if hysteresis is not None else HysteresisConfig()
        self.handover = handover if handover is not None else HandoverConfig()
        self.band = EdgeBand(self.hysteresis.band_m, self.hysteresis.band_heights, ground)
        self.state: dict[int, _Presence] = {}

    @property
    def needs_appearance(self) -> bool:
        return needs_appearance(self.handover)

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

    def _handover(self, tid: int, st: _Presence, present: set[int], t: float) -> bool:
        """Continue the confirmed episode of a track that vanished on this person's path."""
        if st.seen_outside:
            return False
        lost = [(o, p.seen) for o, p in self.state.items() if o not in present and p.confirmed]
        donor_id = pick(self.handover, st.seen, t, lost)
        if donor_id is None:
            return False
        donor = self.state.pop(donor_id)
        st.episode, st.confirmed, st.dwell_raised = True, True, donor.dwell_raised
        st.episode_frame, st.episode_time = donor.episode_frame, donor.episode_time
        st.entry_frame, st.entry_time = donor.entry_frame, donor.entry_time
        st.owner = donor.owner if donor.owner is not None else donor_id
        st.ids = [*(donor.ids or [donor_id]), tid]
        return True

    def step(self, tracks: Detections, th: Thresholds, profile: str = "default") -> list[Alarm]:
        """Advance one frame; return the events it produced."""
        events: list[Alarm] = []
        feet = tracks.foot_points
        heights = tracks.boxes[:, 3] - tracks.boxes[:, 1]
        inside = self.fence.contains(feet)
        clear = self.band.clear_of_fence(self.fence, feet, heights, ~inside)
        t = tracks.time
        ids = tracks.track_ids.tolist()
        present = set(ids)
        app = tracks.appearance
        for i, tid in enumerate(ids):
            foot = (float(feet[i, 0]), float(feet[i, 1]))
            look = None if app is None else app[i]
            st = self.state.get(tid)
            if st is None:
                st = self.state[tid] = _Presence(Sighting(foot, t, float(heights[i]), look=look))
            else:
                see(st.seen, foot, t, float(heights[i]), look)
            if inside[i]:
                events.extend(self._inside(tid, st, tracks, th, profile, i, present))
            else:
                events.extend(self._out(tid, st, tracks, th, profile, bool(clear[i])))
        for tid in [k for k, s in self.state.items() if t - s.seen.time > self.forget_after_s]:
            events.extend(self._end(tid, self.state.pop(tid), tracks, profile, "track lost"))
        return events

    def _out(self, tid: int, st: _Presence, tracks: Detections, th: Thresholds,
             profile: str, clear: bool) -> list[Alarm]:
        """A frame outside: clear of the band it counts towards leaving; on the band it holds
        (the exit clock runs on, no frame is counted, an entry's run is not broken). Either
        way this track was seen outside: it walked in, and is never a re-acquired person."""
        st.seen_outside = True
        if clear:
            st.inside_run = 0
            if st.outside_run == 0:
                st.out_since = tracks.time
            st.outside_run += 1
        if (st.episode and st.outside_run >= th.exit_frames
                and tracks.time - st.out_since >= self.hysteresis.exit_seconds):
            return self._end(tid, st, tracks, profile, "left the zone")
        return []

    def _inside(self, tid: int, st: _Presence, tracks: Detections, th: Thresholds,
                profile: str, i: int, present: set[int]) -> list[Alarm]:
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
        if entered and not self._handover(tid, st, present, t):
            st.confirmed = True
            st.entry_frame, st.entry_time = st.run_frame, st.run_time
            events.extend(self.on_confirm(tid, st, tracks, th, profile, i))
        if st.confirmed:
            events.extend(self.on_inside(tid, st, tracks, th, profile, i))
        return events

    def _end(self, tid: int, st: _Presence, tracks: Detections, profile: str,
             reason: str) -> list[Alarm]:
        out = self.on_exit(tid, st, tracks, profile, Evidence(reason=reason))
        st.episode = st.confirmed = st.dwell_raised = False
        st.owner, st.ids = None, []
        return out

    def on_confirm(self, tid: int, st: _Presence, tracks: Detections, th: Thresholds,
                   profile: str, i: int) -> list[Alarm]:
        return []

    def on_inside(self, tid: int, st: _Presence, tracks: Detections, th: Thresholds,
                  profile: str, i: int) -> list[Alarm]:
        return []

    def on_exit(self, tid: int, st: _Presence, tracks: Detections, profile: str,
                ev: Evidence) -> list[Alarm]:
        return []


class IntrusionRule(ZoneRule):
    """A person's foot point inside the fence for N frames and T seconds: one alarm per entry."""

    kind = AlarmKind.INTRUSION

    def on_confirm(self, tid: int, st: _Presence, tracks: Detections, th: Thresholds,
                   profile: str, i: int) -> list[Alarm]:
        return [self._event(AlarmState.RAISED, tid, st, st.entry_frame, st.entry_time, tracks,
                            profile, evidence(tracks, i))]

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
                  profile: str, i: int) -> list[Alarm]:
        stayed = tracks.time - st.episode_time
        if st.dwell_raised or stayed < th.dwell_seconds:
            return []
        st.dwell_raised = True
        ev = evidence(tracks, i).model_copy(update={"dwell_s": round(stayed, 3)})
        return [self._event(AlarmState.RAISED, tid, st, st.episode_frame, st.episode_time,
                            tracks, profile, ev)]

    def on_exit(self, tid: int, st: _Presence, tracks: Detections, profile: str,
                ev: Evidence) -> list[Alarm]:
        if not st.dwell_raised:
            return []
        ev = ev.model_copy(update={"dwell_s": round(st.seen.time - st.episode_time, 3)})
        return [self._event(AlarmState.CLEARED, tid, st, st.episode_frame, st.episode_time,
                            tracks, profile, ev)]
