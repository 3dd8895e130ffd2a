"""All the rules of one camera, built from its zone config and stepped once per frame.

Resolves fence coordinates against the frame size (normalized or pixels), rejects fences that
fall outside the image, computes each zone's ground area from the calibration, and asks the
schedule which thresholds are in force at every frame's time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from zones.alarm import Alarm
from zones.calibration import GroundPlane
from zones.config import CalibrationConfig, RuleName, ZoneConfig
from zones.crossing import LineCrossingRule
from zones.crowd import CrowdRule
from zones.geometry import Fence, GeometryError, Tripwire, check_inside_frame, to_pixels
from zones.profiles import Schedule, Thresholds
from zones.rules import DwellRule, IntrusionRule, ZoneRule
from zones.tracks import Detections


class Rule(Protocol):
    def step(self, tracks: Detections, th: Thresholds, profile: str = "default") -> list[Alarm]:
        ...


class ZoneGeometryError(GeometryError):
    """A zone that fails once the frame size is known; ``where`` is its config path."""

    def __init__(self, where: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.where = where


@dataclass
class ZoneRules:
    config: ZoneConfig
    fence: Fence
    area_m2: float | None
    rules: list[Rule]


class CameraRules:
    """Every rule of one camera; ``step`` returns the alarm events of one frame."""

    def __init__(self, camera: str, zones: Sequence[ZoneConfig], frame_size: tuple[int, int],
                 schedule: Schedule, calibration: CalibrationConfig | None = None,
                 forget_after_s: float = 3.0, zone_path: tuple[str | int, ...] = ()):
        self.camera = camera
        self.schedule = schedule
        self.ground: GroundPlane | None = None
        if calibration is not None:
            img = to_pixels(calibration.image, frame_size, calibration.coords)
            self.ground = GroundPlane(img, calibration.world)
        self.zones: list[ZoneRules] = []
        for i, zc in enumerate(zones):
            where = (*zone_path, i)
            self.zones.append(self._build(zc, frame_size, forget_after_s, where))
        self._th_minute: int | None = None
        self._th: list[tuple[Thresholds, str]] = []

    def _build(self, zc: ZoneConfig, frame_size: tuple[int, int], forget_after_s: float,
               where: tuple[str | int, ...]) -> ZoneRules:
        try:
            pts = to_pixels(zc.polygon, frame_size, zc.coords)
            check_inside_frame(pts, frame_size)
            fence = Fence(zc.id, zc.kind, zc.risk, pts)
            area = self.ground.area_m2(pts) if self.ground is not None else None
        except GeometryError as exc:
            raise ZoneGeometryError((*where, "polygon"), str(exc)) from exc
        rules: list[Rule] = []
        for name in zc.active_rules:
            if name in (RuleName.INTRUSION, RuleName.DWELL):
                cls = IntrusionRule if name is RuleName.INTRUSION else DwellRule
                rules.append(cls(self.camera, fence, forget_after_s, hysteresis=zc.hysteresis,
                                 handover=zc.handover, ground=self.ground))
            elif name is RuleName.CROWD_DENSITY:
                rules.append(CrowdRule(self.camera, fence, area))
        for j, ln in enumerate(zc.lines):
            try:
                a, b = to_pixels(ln.points, frame_size, zc.coords)
                into = to_pixels([ln.into], frame_size, zc.coords)[0] if ln.into else None
                check_inside_frame([a, b], frame_size)
                wire = Tripwire(ln.id, a, b, into)
            except GeometryError as exc:
                raise ZoneGeometryError((*where, "lines", j), str(exc)) from exc
            rules.append(LineCrossingRule(self.camera, wire, fence, forget_after_s=forget_after_s,
                                          hysteresis=zc.hysteresis, handover=zc.handover,
                                          ground=self.ground))
        return ZoneRules(zc, fence, area, rules)

    @property
    def needs_appearance(self) -> bool:
        """Whether a rule compares people's appearance: the frame step then computes it."""
        return any(isinstance(r, ZoneRule | LineCrossingRule) and r.needs_appearance
                   for z in self.zones for r in z.rules)

    def thresholds(self, t: float) -> list[tuple[Thresholds, str]]:
        """Thresholds and profile name per zone at time ``t``; recomputed once a minute."""
        minute = int(t // 60)
        if minute != self._th_minute:
            self._th = [self.schedule.resolve(z.config.risk, z.config.thresholds, t)
                        for z in self.zones]
            self._th_minute = minute
        return self._th

    def step(self, tracks: Detections) -> list[Alarm]:
        """One frame of tracked people (track id -1 rows are ignored) -> alarm events."""
        people = tracks.tracked
        events: list[Alarm] = []
        for zone, (th, profile) in zip(self.zones, self.thresholds(tracks.time), strict=True):
            for rule in zone.rules:
                events.extend(rule.step(people, th, profile))
        return events
