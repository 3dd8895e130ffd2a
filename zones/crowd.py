"""Crowd count and density in a zone, with raise and clear hysteresis.

With a ground-plane calibration the metric is people per square metre of the zone's ground
area (what crowd-safety limits are written in: about 2/m^2 is dense, 4/m^2 and above is where
crushes start); without one it is the head count. The metric must stay at or above the
threshold for ``crowd_hold_seconds`` to raise, and at or below ``crowd_clear_ratio`` of it for
as long to clear, so a count that hovers at the threshold raises one alarm, not one a second.
"""

from __future__ import annotations

from zones.alarm import Alarm, AlarmKind, AlarmState, Evidence
from zones.geometry import Fence
from zones.profiles import Thresholds
from zones.tracks import Detections


class CrowdRule:
    """Zone-level rule: one alarm episode while the zone is over its crowd threshold."""

    kind = AlarmKind.CROWD_DENSITY

    def __init__(self, camera: str, fence: Fence, area_m2: float | None = None):
        self.camera = camera
        self.fence = fence
        self.area_m2 = area_m2
        self.raised = False
        self._since: float | None = None  # when the metric first crossed the pending edge
        self._since_frame = 0
        self.first_frame = 0
        self.first_time = 0.0
        self.last_count = 0
        self.last_density: float | None = None

    def measure(self, tracks: Detections) -> tuple[int, float | None, Detections]:
        """People inside the zone, their density (None without calibration), and who they are."""
        inside = tracks.select(self.fence.contains(tracks.foot_points))
        n = len(inside)
        density = n / self.area_m2 if self.area_m2 else None
        return n, density, inside

    def threshold(self, th: Thresholds) -> tuple[float | None, bool]:
        """The active threshold and whether it is a density (True) or a count (False)."""
        if self.area_m2 and th.crowd_density is not None:
            return th.crowd_density, True
        if th.crowd_count is not None:
            return float(th.crowd_count), False
        return None, False

    def step(self, tracks: Detections, th: Thresholds, profile: str = "default") -> list[Alarm]:
        n, density, inside = self.measure(tracks)
        self.last_count, self.last_density = n, density
        limit, by_density = self.threshold(th)
        if limit is None:
            return []
        metric = density if by_density and density is not None else float(n)
        t = tracks.time
        crossing = metric <= limit * th.crowd_clear_ratio if self.raised else metric >= limit
        if not crossing:
            self._since = None
            return []
        if self._since is None:
            self._since, self._since_frame = t, tracks.frame
        if t - self._since < th.crowd_hold_seconds:
            return []
        state = AlarmState.CLEARED if self.raised else AlarmState.RAISED
        if not self.raised:
            self.first_frame, self.first_time = self._since_frame, self._since
        self.raised = not self.raised
        self._since = None
        ids = [int(v) for v in inside.track_ids.tolist()]
        evidence = Evidence(
            boxes=[tuple(float(v) for v in b) for b in inside.boxes],
            scores=[float(s) for s in inside.scores], count=n,
            density=None if density is None else round(density, 4),
            area_m2=None if self.area_m2 is None else round(self.area_m2, 3),
        )
        return [Alarm.make(
            kind=self.kind, state=state, camera=self.camera, zone=self.fence.id,
            zone_kind=self.fence.kind, risk=self.fence.risk, key="zone",
            first_frame=self.first_frame, first_time=self.first_time, frame=tracks.frame,
            time=t, track_id=None, track_ids=ids, profile=profile, evidence=evidence,
        )]
