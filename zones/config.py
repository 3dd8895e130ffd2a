"""Config schema of fences, tripwires, calibration and schedules (pure: no file I/O here).

Every model forbids unknown keys, so a typo (``polgon:``) is an error naming the field rather
than a fence that silently never alarms. Geometry is validated as far as it can be without
the frame size; ``resolve`` finishes the job once the camera's resolution is known.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, field_validator, model_validator

from zones.geometry import MAX_POLYGON_POINTS, GeometryError, Risk, ZoneKind, check_polygon
from zones.profiles import ThresholdOverrides

Coords = Literal["auto", "normalized", "pixels"]
# NaN and infinity are refused where they are read: a NaN vertex makes every point test
# false, a fence that silently never alarms.
XY = tuple[FiniteFloat, FiniteFloat]
MAX_CALIBRATION_POINTS = 100


class RuleName(StrEnum):
    INTRUSION = "intrusion"
    DWELL = "dwell"
    CROWD_DENSITY = "crowd_density"


DEFAULT_RULES: dict[ZoneKind, list[RuleName]] = {
    ZoneKind.CLIFF: [RuleName.INTRUSION],
    ZoneKind.WATER: [RuleName.INTRUSION],
    ZoneKind.RESTRICTED: [RuleName.INTRUSION],
    ZoneKind.CROWD: [RuleName.CROWD_DENSITY],
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LineConfig(Strict):
    """A tripwire guarding its zone."""

    id: str = Field(min_length=1, description="tripwire id, unique in the camera")
    points: tuple[XY, XY] = Field(description="the two endpoints")
    into: XY | None = Field(None, description="a point on the alarmed side; omit for both ways")


class HysteresisConfig(Strict):
    """One person, one alarm at a fence edge: how clearly, and how long, a person must be out
    before an entry ends and a new one may raise. Entry is at the edge itself (a foot on the
    cliff line is already at risk); leaving needs the foot beyond a band around the edge, so a
    foot hovering on the line does not raise again and again. The same band arms a tripwire:
    after a crossing, a crossing back counts only once the foot has been clear of the line."""

    band_m: float = Field(0.3, ge=0, le=5, description="band around the edge in ground metres "
                                                       "(cameras with a calibration)")
    band_heights: float = Field(0.15, ge=0, le=2, description="band in body heights (the box's "
                                                             "height) without a calibration")
    exit_seconds: float = Field(1.0, ge=0, le=60, description="clearly out this long, as well "
                                                             "as exit_frames, to end an entry")


class HandoverConfig(Strict):
    """Re-association: a person whose track broke inside a fence (occlusion, identity switch)
    keeps their alarm instead of raising a second one, when a new track appears inside without
    having walked in, near where the lost track's motion puts the person, looking alike."""

    reach_heights: float = Field(1.0, ge=0, le=10, description="body heights from the lost "
                                                              "track's path (last seen, moved "
                                                              "on at its speed); 0 disables")
    predict_seconds: float = Field(1.5, ge=0, le=10, description="follow the lost track's "
                                                                "motion for at most this long")
    appearance: bool = Field(True, description="also compare clothing colour (the edge computes "
                                               "a histogram per person only when asked)")
    min_similarity: float = Field(0.75, ge=0, le=1, description="colour similarity "
                                                              "(Bhattacharyya, 0-1) of one person")


class ZoneConfig(Strict):
    """One electronic fence on one camera."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$",
                    description="zone id, unique in the camera; used in MQTT topics")
    kind: ZoneKind = Field(description="cliff, water, crowd or restricted")
    risk: Risk = Field(Risk.MEDIUM, description="assessed risk grade: high, medium or low")
    polygon: list[XY] = Field(max_length=MAX_POLYGON_POINTS,
                              description="vertices, normalized [0,1] or source pixels "
                                          f"(3 to {MAX_POLYGON_POINTS})")
    coords: Coords = Field("auto", description="how to read polygon and line points")
    rules: list[RuleName] | None = Field(None, description="rules to run; default by kind")
    lines: list[LineConfig] = Field(default_factory=list)
    thresholds: ThresholdOverrides = Field(
        default_factory=ThresholdOverrides, description="overrides of the risk grade's defaults")
    hysteresis: HysteresisConfig = Field(
        default_factory=HysteresisConfig, description="edge band and exit time (one alarm per "
                                                      "entry)")
    handover: HandoverConfig = Field(
        default_factory=HandoverConfig, description="re-association of broken tracks")

    @field_validator("polygon")
    @classmethod
    def _polygon(cls, v: list[XY]) -> list[XY]:
        try:
            check_polygon(v)
        except GeometryError as exc:
            raise ValueError(str(exc)) from exc
        return v

    @model_validator(mode="after")
    def _check(self) -> ZoneConfig:
        ids = [ln.id for ln in self.lines]
        if len(ids) != len(set(ids)):
            raise ValueError("tripwire ids must be unique within a zone")
        return self

    @property
    def active_rules(self) -> list[RuleName]:
        return self.rules if self.rules is not None else DEFAULT_RULES[self.kind]


class CalibrationConfig(Strict):
    """Ground-plane calibration: image points (px or normalized) and their ground metres."""

    image: list[XY] = Field(min_length=4, max_length=MAX_CALIBRATION_POINTS,
                            description="points in the image")
    world: list[XY] = Field(min_length=4, max_length=MAX_CALIBRATION_POINTS,
                            description="the same points on the ground, metres")
    coords: Coords = "auto"

    @model_validator(mode="after")
    def _same_length(self) -> CalibrationConfig:
        if len(self.image) != len(self.world):
            raise ValueError(
                f"image has {len(self.image)} points but world has {len(self.world)}")
        return self
