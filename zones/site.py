"""What exists at a site: its edge boxes, their cameras and radars, and the zones each watches.

One source of truth. Each edge box's config already names its site, itself, its cameras with
their zones, its radars and the ground zones they watch; that is what the box will ever put
in an alarm. The central's registry (``central.registry``) reads the same files rather than
a second list kept by hand, which would drift the first time a fence is added at the site;
the console's map draws the same topology.

Why it lives in the pure core: the edge and the central both need it and may not import each
other, and it is plain validated data with no I/O. ``EdgeConfigView`` is the part of an edge
config that says what exists: it validates the zones, radars and ground zones with the very
models the edge loads them with (``zones.config``, ``zones.radar_config``), so the two readers
cannot disagree about an id or a default, and it ignores everything else (detector, tracker,
camera URLs and their passwords, which a central has no business holding). The edge's own
config derives its topology through the same ``build_topology`` (``edge.config``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from zones.config import ZoneConfig
from zones.geometry import Risk, ZoneKind
from zones.radar_config import GroundZoneConfig, RadarConfig

ID_PATTERN = r"^[A-Za-z0-9_.-]+$"
DEFAULT_SITE_ID = "default"  # what an edge config that names no site publishes under
DEFAULT_EDGE_ID = "edge-1"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ZoneRef(_Frozen):
    """A fence as the registry knows it: its id and what kind of danger it guards."""

    id: str
    kind: ZoneKind
    risk: Risk


class SensorRef(_Frozen):
    """A camera or a radar (a radar's alarms name it in their ``camera`` field)."""

    id: str
    kind: Literal["camera", "radar"]
    zones: tuple[str, ...] = Field(description="the zones whose alarms it may raise")


class SiteTopology(_Frozen):
    """One edge box: its site, its id, its sensors and the zones they watch."""

    site: str = Field(pattern=ID_PATTERN)
    edge: str = Field(pattern=ID_PATTERN)
    sensors: tuple[SensorRef, ...] = ()
    zones: tuple[ZoneRef, ...] = ()

    def zones_of(self, sensor: str) -> frozenset[str] | None:
        """The zones ``sensor`` may alarm in; None when this edge has no such sensor (a
        camera and a radar sharing an id share their zones: their alarms look alike)."""
        found = [s for s in self.sensors if s.id == sensor]
        return frozenset(z for s in found for z in s.zones) if found else None


def build_topology(site: str, edge: str,
                   cameras: Sequence[tuple[str, Sequence[ZoneConfig]]],
                   radars: Sequence[RadarConfig],
                   ground_zones: Sequence[GroundZoneConfig]) -> SiteTopology:
    """The topology of one edge config's parts. A radar raises alarms in the ground zones
    that name it (all of them when a ground zone names none), as ``resolve_ground`` wires it.
    A camera zone and a ground zone may share an id (the central merges their incidents)."""
    sensors = [SensorRef(id=cam, kind="camera", zones=tuple(z.id for z in zones))
               for cam, zones in cameras]
    radar_ids = [r.id for r in radars]
    for rid in radar_ids:
        watched = tuple(g.id for g in ground_zones if g.radars is None or rid in g.radars)
        sensors.append(SensorRef(id=rid, kind="radar", zones=watched))
    zones: dict[str, ZoneRef] = {}
    for _, cam_zones in cameras:
        for z in cam_zones:
            zones.setdefault(z.id, ZoneRef(id=z.id, kind=z.kind, risk=z.risk))
    for g in ground_zones:
        zones.setdefault(g.id, ZoneRef(id=g.id, kind=g.kind, risk=g.risk))
    return SiteTopology(site=site, edge=edge, sensors=tuple(sensors),
                        zones=tuple(zones.values()))


# -- the part of an edge config that says what exists ------------------------------------------


class _View(BaseModel):
    """Reads only its own keys of an edge config section; the edge checks the rest."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class SiteView(_View):
    id: str = Field(DEFAULT_SITE_ID, pattern=ID_PATTERN)


class EdgeView(_View):
    id: str = Field(DEFAULT_EDGE_ID, pattern=ID_PATTERN)


class CameraView(_View):
    id: str = Field(min_length=1, pattern=ID_PATTERN)
    zones: list[ZoneConfig] = Field(min_length=1)


class EdgeConfigView(_View):
    """An edge config as the central reads it (``central.registry``)."""

    site: SiteView = Field(default_factory=SiteView)
    edge: EdgeView = Field(default_factory=EdgeView)
    cameras: list[CameraView] = Field(default_factory=list)
    radars: list[RadarConfig] = Field(default_factory=list)
    ground_zones: list[GroundZoneConfig] = Field(default_factory=list)

    def topology(self) -> SiteTopology:
        return build_topology(self.site.id, self.edge.id,
                              [(c.id, c.zones) for c in self.cameras], self.radars,
                              self.ground_zones)
