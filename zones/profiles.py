"""Threshold profiles: risk grade and schedule decide how quickly and how easily rules fire.

A high-risk cliff edge alarms on the second frame a person stands past the fence; a low-risk
lawn waits a second. Peak periods (holidays, festival days, the tourist season) and night change
thresholds again: a crowd that is normal on a Tuesday is the start of a crush on National Day.
Resolution order: the risk grade's defaults, then the zone's own overrides, then every period
in force at the frame's local time, in the order configured (later wins).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from zones.geometry import Risk


class Thresholds(BaseModel):
    """Every tunable a rule reads. All times are seconds of frame time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    intrusion_frames: int = Field(2, ge=1, le=100,
                                  description="consecutive frames inside before an intrusion")
    intrusion_seconds: float = Field(0.0, ge=0, le=600,
                                     description="and at least this long inside")
    exit_frames: int = Field(3, ge=1, le=100,
                             description="consecutive frames outside that end an episode")
    dwell_seconds: float = Field(30.0, gt=0, le=86400, description="time inside before dwell")
    line_frames: int = Field(2, ge=1, le=100,
                             description="frames on the new side that confirm a crossing")
    crowd_count: int | None = Field(None, ge=1, description="raise at this many people")
    crowd_density: float | None = Field(None, gt=0, le=20,
                                        description="raise at this many people per m^2")
    crowd_clear_ratio: float = Field(0.8, gt=0, le=1,
                                     description="clear below this share of the threshold")
    crowd_hold_seconds: float = Field(2.0, ge=0, le=600,
                                      description="above (or below) this long to raise (clear)")


class ThresholdOverrides(BaseModel):
    """Any subset of Thresholds; unset fields keep the value from the level below."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    intrusion_frames: int | None = Field(None, ge=1, le=100)
    intrusion_seconds: float | None = Field(None, ge=0, le=600)
    exit_frames: int | None = Field(None, ge=1, le=100)
    dwell_seconds: float | None = Field(None, gt=0, le=86400)
    line_frames: int | None = Field(None, ge=1, le=100)
    crowd_count: int | None = Field(None, ge=1)
    crowd_density: float | None = Field(None, gt=0, le=20)
    crowd_clear_ratio: float | None = Field(None, gt=0, le=1)
    crowd_hold_seconds: float | None = Field(None, ge=0, le=600)

    def apply(self, base: Thresholds) -> Thresholds:
        return base.model_copy(update=self.model_dump(exclude_none=True))


RISK_DEFAULTS: dict[Risk, Thresholds] = {
    Risk.HIGH: Thresholds(intrusion_frames=2, intrusion_seconds=0.0, dwell_seconds=10.0,
                          crowd_count=15, crowd_density=2.0),
    Risk.MEDIUM: Thresholds(intrusion_frames=3, intrusion_seconds=0.3, dwell_seconds=30.0,
                            crowd_count=25, crowd_density=3.0),
    Risk.LOW: Thresholds(intrusion_frames=5, intrusion_seconds=1.0, dwell_seconds=60.0,
                         crowd_count=40, crowd_density=4.0),
}


def _hhmm(text: str) -> dt.time:
    try:
        return dt.time.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"time {text!r} is not HH:MM") from exc


class Period(BaseModel):
    """A named time window; every condition given must hold (dates AND weekdays AND times)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="shown in alarms as the profile in force")
    dates: list[tuple[dt.date, dt.date]] = Field(
        default_factory=list, description="inclusive [first, last] date ranges")
    weekdays: list[int] = Field(default_factory=list,
                                description="ISO weekdays, 1 = Monday ... 7 = Sunday")
    times: list[tuple[str, str]] = Field(
        default_factory=list, description="[start, end) HH:MM; may wrap midnight (19:00-06:00)")
    overrides: ThresholdOverrides = Field(default_factory=ThresholdOverrides)

    @model_validator(mode="after")
    def _check(self) -> Period:
        for first, last in self.dates:
            if last < first:
                raise ValueError(f"date range {first}..{last} ends before it starts")
        for d in self.weekdays:
            if not 1 <= d <= 7:
                raise ValueError(f"weekday {d} is not in 1..7")
        for start, end in self.times:
            _hhmm(start)
            _hhmm(end)
        return self

    def active(self, local: dt.datetime) -> bool:
        day = local.date()
        if self.dates and not any(a <= day <= b for a, b in self.dates):
            return False
        if self.weekdays and local.isoweekday() not in self.weekdays:
            return False
        if self.times:
            now = local.time()
            for start_s, end_s in self.times:
                start, end = _hhmm(start_s), _hhmm(end_s)
                inside = start <= now < end if start <= end else (now >= start or now < end)
                if inside:
                    return True
            return False
        return True


class Schedule:
    """Resolves the thresholds in force for a zone at a frame time, cached per minute."""

    def __init__(self, periods: Sequence[Period], timezone: str = "UTC"):
        self.periods = list(periods)
        self.tz = ZoneInfo(timezone)
        self._minute: int | None = None
        self._active: list[Period] = []

    def active_periods(self, t: float) -> list[Period]:
        minute = int(t // 60)
        if minute != self._minute:
            local = dt.datetime.fromtimestamp(t, tz=self.tz)
            self._active = [p for p in self.periods if p.active(local)]
            self._minute = minute
        return self._active

    def resolve(self, risk: Risk, zone_overrides: ThresholdOverrides | None,
                t: float) -> tuple[Thresholds, str]:
        """Thresholds and the profile name (active periods joined by '+', or 'default')."""
        th = RISK_DEFAULTS[risk]
        if zone_overrides is not None:
            th = zone_overrides.apply(th)
        active = self.active_periods(t)
        for p in active:
            th = p.overrides.apply(th)
        return th, "+".join(p.name for p in active) or "default"
