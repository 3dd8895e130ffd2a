"""One radar's track messages through the fence rules: admission, position, rules, fusion.

A radar reports each track on its own schedule, not in frames, so every accepted message is
one "frame" of that one track: the same ``IntrusionRule`` and ``DwellRule`` the cameras use
(``zones/rules.py``) step on a one-person ``Detections`` whose box is a small square around
the ground point in site metres, so the foot point is exactly the radar position. Frame
hysteresis then counts that track's consecutive messages, and ``intrusion_seconds`` and
``dwell_seconds`` its message times. A radar that falls silent is noticed by ``expire``,
called with the wall clock, which clears the alarms of tracks gone for ``track_lost_s``.

Admission is decided here too, so it is tested as a table: a message older than
``max_age_s`` on arrival is ``late`` (warning about where someone was seconds ago is worse
than useless at a cliff edge), one stamped that far ahead of the edge's clock is ``future``
(the radar's clock is wrong, and its tracks would never look silent), an older timestamp
than the track's last is ``out_of_order``, the same timestamp again is a ``duplicate`` (MQTT
delivers at least once), a target beyond ``max_range_m`` or outside the field of view is
``out_of_coverage`` (a multipath ghost).

Alarms carry ``camera`` = the radar id, ``frame`` = the radar's count of accepted messages
(so ids are deterministic for a given message stream), ``source`` = ``radar`` or ``fused``,
and the ground position, radar track, sources and confidence in ``evidence``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from zones.alarm import Alarm, AlarmState, Evidence
from zones.config import RuleName
from zones.fusion import CameraView, fused_confidence, match_radar_track
from zones.profiles import Schedule, Thresholds
from zones.radar import GeoOrigin, RadarMessage, wrap180
from zones.radar_config import FusionConfig, GroundZone, Radar
from zones.rules import NO_HANDOVER, NO_HYSTERESIS, DwellRule, IntrusionRule, ZoneRule
from zones.tracks import Detections

HALF_BOX_M = 0.25  # half-width of the square standing in for a radar target's "box"


class Drop(StrEnum):
    """Why a radar message was not used; every drop is counted under one of these."""

    MALFORMED = "malformed"
    UNKNOWN_RADAR = "unknown_radar"
    LATE = "late"
    OUT_OF_ORDER = "out_of_order"
    DUPLICATE = "duplicate"
    OUT_OF_COVERAGE = "out_of_coverage"
    FUTURE = "future"  # stamped ahead of the edge's clock by more than max_age_s
    OVERFLOW = "overflow"  # the edge's bounded queue was full


@dataclass
class _Track:
    time: float
    x: float
    y: float
    speed: float


@dataclass(frozen=True)
class _Episode:
    source: str
    sources: list[str]
    confidence: float
    camera_track: int | None
    match_m: float | None


class RadarRules:
    """The ground-fence rules of one radar, stepped once per accepted message."""

    def __init__(self, radar: Radar, zones: list[GroundZone], schedule: Schedule,
                 origin: GeoOrigin | None = None, fusion: FusionConfig | None = None):
        self.radar = radar
        self.id = radar.config.id
        self.origin = origin
        self.fusion = fusion if fusion is not None else FusionConfig()
        self.schedule = schedule
        self.seq = 0  # accepted messages: the "frame" of this radar's alarms
        self.tracks: dict[int, _Track] = {}
        self._episodes: dict[str, _Episode] = {}
        lost = radar.config.track_lost_s
        self.zones: list[tuple[GroundZone, list[ZoneRule]]] = []
        self._bounds: list[tuple[float, float, float, float]] = []
        for z in zones:
            rules: list[ZoneRule] = []
            for name in z.config.active_rules:
                cls = IntrusionRule if name is RuleName.INTRUSION else DwellRule
                # Handover off: radar ids are stable, and concurrent tracks of one radar are
                # stepped one message at a time, so "not in this frame" is not "vanished".
                # No edge band or exit time either: a radar track has no box to size a band.
                rules.append(cls(self.id, z.fence, forget_after_s=lost,
                                 hysteresis=NO_HYSTERESIS, handover=NO_HANDOVER))
            self.zones.append((z, rules))
            self._bounds.append(tuple(z.fence.polygon.bounds))
        self._th_minute: int | None = None
        self._th: list[tuple[Thresholds, str]] = []

    def admit(self, msg: RadarMessage, now: float) -> Drop | None:
        """None when the message may be used, else why not (``now``: arrival, epoch s)."""
        cfg = self.radar.config
        if now - msg.time > cfg.max_age_s:
            return Drop.LATE
        if msg.time - now > cfg.max_age_s:
            return Drop.FUTURE  # a radar clock that runs ahead would hold alarms open
        last = self.tracks.get(msg.track_id)
        if last is not None and msg.time <= last.time:
            return Drop.DUPLICATE if msg.time == last.time else Drop.OUT_OF_ORDER
        off_axis = abs(float(wrap180(msg.azimuth_deg)))
        if msg.range_m > cfg.max_range_m or off_axis > cfg.fov_deg / 2.0 + 1e-9:
            return Drop.OUT_OF_COVERAGE
        return None

    def position(self, msg: RadarMessage) -> tuple[float, float]:
        """Site metres: the message's own lat/lon where given and the site has an origin."""
        if msg.lat is not None and msg.lon is not None and self.origin is not None:
            (x, y), = self.origin.to_site([(msg.lat, msg.lon)])
        else:
            (x, y), = self.radar.pose.to_site(msg.range_m, msg.azimuth_deg)
        return float(x), float(y)

    def _thresholds(self, t: float) -> list[tuple[Thresholds, str]]:
        minute = int(t // 60)
        if minute != self._th_minute:
            self._th = [self.schedule.resolve(z.config.risk, z.config.thresholds, t)
                        for z, _ in self.zones]
            self._th_minute = minute
        return self._th

    def step(self, msg: RadarMessage, now: float,
             views: Mapping[str, CameraView] | None = None) -> tuple[Drop | None, list[Alarm]]:
        """Admit one message and run it through the rules: (drop reason or None, events)."""
        drop = self.admit(msg, now)
        if drop is not None:
            return drop, []
        x, y = self.position(msg)
        tid = msg.track_id
        self.seq += 1
        self.tracks[tid] = _Track(msg.time, x, y, msg.speed_mps)
        det = Detections.create(
            [[x - HALF_BOX_M, y - 2 * HALF_BOX_M, x + HALF_BOX_M, y]], [1.0], None, [tid],
            camera=self.id, frame=self.seq, time=msg.time)
        events: list[Alarm] = []
        for (_, rules), (th, profile), (x0, y0, x1, y1) in zip(
                self.zones, self._thresholds(msg.time), self._bounds, strict=True):
            # A fence the track is nowhere near and has no history with cannot alarm: skip
            # it (a site with a hundred fences costs one bounding-box test for most of them).
            # Its tracks that went silent are still forgotten by ``expire``.
            if not (x0 <= x <= x1 and y0 <= y <= y1) and all(tid not in r.state for r in rules):
                continue
            for rule in rules:
                events.extend(rule.step(det, th, profile))
        self._prune(msg.time)
        return None, [self._decorate(e, msg.time, views or {}) for e in events]

    def expire(self, now: float) -> list[Alarm]:
        """Clear the alarms of tracks silent for ``track_lost_s`` (``now``: wall clock)."""
        if self.seq == 0:
            return []
        empty = Detections.empty(camera=self.id, frame=self.seq, time=now)
        events: list[Alarm] = []
        for (_, rules), (th, profile) in zip(self.zones, self._thresholds(now), strict=True):
            for rule in rules:
                events.extend(rule.step(empty, th, profile))
        out = [self._decorate(e, now, {}) for e in events]
        self._prune(now)
        return out

    def _prune(self, now: float) -> None:
        """Forget tracks long gone: bounded memory, and out-of-order needs no older history
        than a message could have without being late."""
        keep = max(self.radar.config.track_lost_s, self.radar.config.max_age_s) + 1.0
        for tid in [k for k, tr in self.tracks.items() if now - tr.time > keep]:
            del self.tracks[tid]

    def _fuse(self, tid: int, t: float, views: Mapping[str, CameraView]) -> _Episode:
        base = self.radar.config.confidence
        radar_only = _Episode("radar", [f"radar:{self.id}"], base, None, None)
        if not self.fusion.enabled or not views:
            return radar_only
        live = {k: (tr.x, tr.y) for k, tr in self.tracks.items()
                if abs(t - tr.time) <= self.fusion.max_age_s}
        m = match_radar_track(tid, live, views, t, self.fusion.gate_m, self.fusion.max_age_s)
        if m is None:
            return radar_only
        conf = fused_confidence(base, m.score, m.distance_m, self.fusion.gate_m)
        return _Episode("fused", [f"radar:{self.id}", f"camera:{m.camera}"], conf,
                        m.camera_track, m.distance_m)

    def _decorate(self, event: Alarm, t: float, views: Mapping[str, CameraView]) -> Alarm:
        """Radar evidence instead of pixel boxes; the source decided when the episode rose."""
        tid = event.track_id if event.track_id is not None else -1
        if event.state is AlarmState.RAISED:
            ep = self._episodes.get(event.id) or self._fuse(tid, t, views)
            self._episodes[event.id] = ep
        else:
            popped = self._episodes.pop(event.id, None)
            ep = popped if popped is not None else self._fuse(tid, t, {})
        tr = self.tracks.get(tid)
        ev = Evidence(
            dwell_s=event.evidence.dwell_s, reason=event.evidence.reason,
            sources=ep.sources, confidence=ep.confidence, radar_track=tid,
            camera_track=ep.camera_track, match_m=ep.match_m,
            position_m=(round(tr.x, 3), round(tr.y, 3)) if tr is not None else None,
            speed_mps=tr.speed if tr is not None else None)
        return event.model_copy(update={"source": ep.source, "evidence": ev})
