"""Config schema of radars, ground fences and fusion (pure: no file I/O), and its resolution.

Ground fences are drawn in site metres (the plane the cameras' calibrations map to) or in
lat/lon; radars are placed the same way. Everything is resolved to site metres once, at
start-up, by ``resolve_ground``: a lat/lon without ``site.origin``, a fence naming a radar
that does not exist or two radars with one id is a ``GroundConfigError`` whose ``where`` is
the config path, so the loader can name the file, line and field.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from zones.config import RuleName
from zones.geometry import Fence, GeometryError, Risk, ZoneKind, check_polygon
from zones.profiles import ThresholdOverrides
from zones.radar import GeoOrigin, RadarPose

XY = tuple[float, float]
LatLon = tuple[float, float]
Where = tuple[str | int, ...]
GROUND_RULES = (RuleName.INTRUSION, RuleName.DWELL)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteOrigin(Strict):
    """Site (0, 0) on the Earth, for radars and fences given in lat/lon."""

    lat: float = Field(ge=-90, le=90, description="latitude of site (0, 0), degrees WGS 84")
    lon: float = Field(ge=-180, le=180, description="longitude of site (0, 0), degrees")
    grid_bearing_deg: float = Field(0.0, ge=-360, le=360,
                                    description="bearing of the site grid's +y axis, degrees "
                                                "clockwise from true north")

    def geo(self) -> GeoOrigin:
        return GeoOrigin(self.lat, self.lon, self.grid_bearing_deg)


class RadarConfig(Strict):
    """One radar: where it stands, where it looks, and what its messages may be."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                    description="radar id: the radar_id of its messages, and alarms' camera")
    topic: str | None = Field(None, min_length=1,
                              description="MQTT topic of its track messages (default: "
                                          "the wire contract's track topic of this "
                                          "site and radar)")
    position: XY | None = Field(None, description="antenna position in site metres")
    position_latlon: LatLon | None = Field(None, description="antenna [lat, lon] instead")
    heading_deg: float = Field(0.0, ge=-360, le=360,
                               description="bearing of the boresight (azimuth 0), degrees "
                                           "clockwise from the site grid's +y axis")
    azimuth: Literal["clockwise", "counterclockwise"] = Field(
        "clockwise", description="which way the radar's positive azimuths turn")
    height_m: float = Field(0.0, ge=0, le=200, description="antenna height above the ground")
    max_range_m: float = Field(200.0, gt=0, le=10_000,
                               description="messages beyond this range are dropped")
    fov_deg: float = Field(360.0, gt=0, le=360,
                           description="field of view, centred on the boresight")
    max_age_s: float = Field(2.0, gt=0, le=60,
                             description="messages older than this on arrival are dropped")
    track_lost_s: float = Field(3.0, gt=0, le=300,
                                description="a track without a message this long is gone: "
                                            "its alarms clear")
    confidence: float = Field(0.7, gt=0, lt=1,
                              description="confidence of a radar-only alarm")

    @model_validator(mode="after")
    def _one_position(self) -> RadarConfig:
        if (self.position is None) == (self.position_latlon is None):
            raise ValueError("give exactly one of position (site metres) and position_latlon")
        if self.topic is not None and any(c in self.topic for c in "+#\x00"):
            raise ValueError("topic must be a plain topic, without + or # wildcards")
        return self


class GroundZoneConfig(Strict):
    """A fence on the ground, watched by radars (and matched with cameras by fusion)."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$",
                    description="zone id; name it like the camera zone it matches so the "
                                "central merges their alarms into one incident")
    kind: ZoneKind = Field(description="cliff, water, crowd or restricted")
    risk: Risk = Field(Risk.MEDIUM, description="assessed risk grade: high, medium or low")
    polygon: list[XY] | None = Field(None, description="vertices in site metres")
    polygon_latlon: list[LatLon] | None = Field(None, description="vertices as [lat, lon]")
    rules: list[RuleName] | None = Field(None, description="intrusion and/or dwell "
                                                           "(default: intrusion)")
    radars: list[str] | None = Field(None, description="radar ids that watch it (default: all)")
    thresholds: ThresholdOverrides = Field(default_factory=ThresholdOverrides,
                                           description="overrides of the risk grade's defaults")

    @field_validator("polygon")
    @classmethod
    def _polygon(cls, v: list[XY] | None) -> list[XY] | None:
        if v is not None:
            try:
                check_polygon(v)
            except GeometryError as exc:
                raise ValueError(str(exc)) from exc
        return v

    @field_validator("rules")
    @classmethod
    def _rules(cls, v: list[RuleName] | None) -> list[RuleName] | None:
        bad = [r.value for r in v or [] if r not in GROUND_RULES]
        if bad:
            raise ValueError(f"ground zones run intrusion and dwell only, not {bad}")
        return v

    @model_validator(mode="after")
    def _one_polygon(self) -> GroundZoneConfig:
        if (self.polygon is None) == (self.polygon_latlon is None):
            raise ValueError("give exactly one of polygon (site metres) and polygon_latlon")
        return self

    @property
    def active_rules(self) -> list[RuleName]:
        return self.rules if self.rules is not None else [RuleName.INTRUSION]


class FusionConfig(Strict):
    """How radar tracks are matched with camera tracks on the ground."""

    enabled: bool = Field(True, description="match radar alarms with camera tracks")
    gate_m: float = Field(2.0, gt=0, le=50,
                          description="a radar and a camera track farther apart are never "
                                      "one person")
    max_age_s: float = Field(1.0, gt=0, le=30,
                             description="camera positions older than this (against the "
                                         "radar message time) are not matched")


class GroundConfigError(GeometryError):
    """A radar or ground-fence setting that fails resolution; ``where`` is its config path."""

    def __init__(self, where: Where, message: str):
        super().__init__(message)
        self.where = where


@dataclass(frozen=True)
class Radar:
    """A radar resolved to site metres."""

    config: RadarConfig
    pose: RadarPose
    topic: str


@dataclass(frozen=True)
class GroundZone:
    config: GroundZoneConfig
    fence: Fence
    radars: frozenset[str]


@dataclass(frozen=True)
class GroundSite:
    radars: dict[str, Radar] = field(default_factory=dict)
    zones: list[GroundZone] = field(default_factory=list)
    origin: GeoOrigin | None = None

    def zones_of(self, radar: str) -> list[GroundZone]:
        return [z for z in self.zones if radar in z.radars]


def _site_xy(origin: GeoOrigin | None, latlon: Sequence[LatLon], where: Where) -> list[XY]:
    if origin is None:
        raise GroundConfigError(where, "lat/lon needs site.origin (the lat/lon of site (0, 0))")
    return [(float(x), float(y)) for x, y in origin.to_site(latlon)]


def resolve_ground(origin: SiteOrigin | None, radars: Sequence[RadarConfig],
                   zones: Sequence[GroundZoneConfig], default_topic: Callable[[str], str]
                   ) -> GroundSite:
    """Radars and ground fences in site metres; raises GroundConfigError naming the field.
    ``default_topic(radar_id)`` is the track topic of a radar whose config names none (the
    wire contract spells it; this core knows no broker)."""
    geo = origin.geo() if origin is not None else None
    out: dict[str, Radar] = {}
    topics: dict[str, str] = {}
    for i, rc in enumerate(radars):
        if rc.id in out:
            raise GroundConfigError(("radars", i, "id"), f"radar id {rc.id!r} is used twice")
        if rc.position is not None:
            x, y = rc.position
        else:
            assert rc.position_latlon is not None
            ((x, y),) = _site_xy(geo, [rc.position_latlon], ("radars", i, "position_latlon"))
        topic = rc.topic or default_topic(rc.id)
        if topic in topics:
            raise GroundConfigError(("radars", i, "topic"),
                                    f"topic {topic!r} is also radar {topics[topic]!r}'s")
        topics[topic] = rc.id
        pose = RadarPose(x, y, rc.heading_deg, rc.height_m, rc.azimuth == "clockwise")
        out[rc.id] = Radar(rc, pose, topic)
    ground: list[GroundZone] = []
    seen: set[str] = set()
    for j, zc in enumerate(zones):
        if zc.id in seen:
            raise GroundConfigError(("ground_zones", j, "id"), f"zone id {zc.id!r} is used twice")
        seen.add(zc.id)
        unknown = sorted(set(zc.radars or []) - set(out))
        if unknown:
            raise GroundConfigError(("ground_zones", j, "radars"),
                                    f"unknown radar(s) {unknown} (have: {sorted(out)})")
        if zc.polygon is not None:
            pts = list(zc.polygon)
        else:
            assert zc.polygon_latlon is not None
            pts = _site_xy(geo, zc.polygon_latlon, ("ground_zones", j, "polygon_latlon"))
        try:
            fence = Fence(zc.id, zc.kind, zc.risk, pts)
        except GeometryError as exc:
            raise GroundConfigError(("ground_zones", j, "polygon_latlon"), str(exc)) from exc
        ground.append(GroundZone(zc, fence, frozenset(zc.radars or out)))
    return GroundSite(out, ground, geo)
