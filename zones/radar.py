"""Radar geometry and the radar track message: where a radar's (range, azimuth) lies in site metres.

Everything on the ground is in *site metres*: the same plane the cameras' ground-plane
calibrations map to, so a radar track and a camera's foot point can be compared directly and
one ground fence serves both. A site that also works in GPS coordinates fixes the plane to the
Earth with ``GeoOrigin`` (a lat/lon and the bearing of the site grid's +y axis); the
equirectangular projection is within millimetres of the great-circle distance over the few
hundred metres of a site (under 1 cm at 1 km) and needs no projection library.

Angles follow the compass convention because that is how radars are surveyed and installed:
a *bearing* is degrees clockwise from the site grid's +y axis, the radar's ``heading_deg`` is
the bearing of its boresight (azimuth 0), and azimuths are clockwise-positive unless the
vendor counts the other way (``clockwise=False``). Ranges are slant ranges from the antenna;
a radar mounted ``height_m`` above the ground sees a person at ground distance
``sqrt(range^2 - height^2)``: at 6 m up and 8 m out, ignoring that puts the person 2 m off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from zones.tracks import FloatArray

EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG): what the equirectangular scale uses
RADAR_SCHEMA = "perimeter.radar/1"
_K = math.pi / 180.0 * EARTH_RADIUS_M  # metres per degree of latitude


def wrap180(deg: npt.ArrayLike) -> FloatArray:
    """Angles to [-180, 180): an azimuth of 350 is 10 degrees to the left."""
    out: FloatArray = (np.asarray(deg, dtype=np.float64) + 180.0) % 360.0 - 180.0
    return out


@dataclass(frozen=True)
class GeoOrigin:
    """Ties site metres to the Earth: ``lat``/``lon`` is site (0, 0); the site grid's +y axis
    points ``grid_bearing_deg`` clockwise from true north (0: +x east, +y north)."""

    lat: float
    lon: float
    grid_bearing_deg: float = 0.0

    def _kx(self, lat: FloatArray) -> FloatArray:
        """Metres per degree of longitude, at the mid-latitude of origin and point (which
        makes the error second order in the distance)."""
        out: FloatArray = _K * np.cos(np.radians((lat + self.lat) / 2.0))
        return out

    def to_site(self, latlon: npt.ArrayLike) -> FloatArray:
        """``(N, 2)`` [lat, lon] degrees -> ``(N, 2)`` site metres."""
        ll = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
        east = ((ll[:, 1] - self.lon + 180.0) % 360.0 - 180.0) * self._kx(ll[:, 0])
        north = (ll[:, 0] - self.lat) * _K
        b = math.radians(self.grid_bearing_deg)
        c, s = math.cos(b), math.sin(b)
        return np.column_stack((east * c - north * s, east * s + north * c))

    def to_latlon(self, xy: npt.ArrayLike) -> FloatArray:
        """``(N, 2)`` site metres -> ``(N, 2)`` [lat, lon] degrees."""
        p = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        b = math.radians(self.grid_bearing_deg)
        c, s = math.cos(b), math.sin(b)
        east = p[:, 0] * c + p[:, 1] * s
        north = -p[:, 0] * s + p[:, 1] * c
        lat = self.lat + north / _K
        lon = (self.lon + east / self._kx(lat) + 180.0) % 360.0 - 180.0
        return np.column_stack((lat, lon))


@dataclass(frozen=True)
class RadarPose:
    """Where a radar stands on the site and where it looks.

    ``x``, ``y``: antenna position in site metres; ``heading_deg``: bearing of the boresight;
    ``height_m``: antenna height above the ground (ranges are slant ranges);
    ``clockwise``: whether positive azimuths turn clockwise (seen from above).
    """

    x: float
    y: float
    heading_deg: float = 0.0
    height_m: float = 0.0
    clockwise: bool = True

    def to_site(self, range_m: npt.ArrayLike, azimuth_deg: npt.ArrayLike) -> FloatArray:
        """Slant range (m) and azimuth (deg) -> ``(N, 2)`` site metres on the ground.

        A range shorter than the mounting height (a target right under the mast, or noise)
        lands at the foot of the mast rather than producing NaN.
        """
        r = np.asarray(range_m, dtype=np.float64).reshape(-1)
        az = np.asarray(azimuth_deg, dtype=np.float64).reshape(-1)
        ground = np.sqrt(np.maximum(r * r - self.height_m ** 2, 0.0))
        bearing = np.radians(self.heading_deg + (az if self.clockwise else -az))
        return np.column_stack((self.x + ground * np.sin(bearing),
                                self.y + ground * np.cos(bearing)))

    def to_polar(self, xy: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """``(N, 2)`` site metres -> slant range (m) and azimuth in [-180, 180) (deg)."""
        p = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        dx, dy = p[:, 0] - self.x, p[:, 1] - self.y
        ground = np.hypot(dx, dy)
        rel = wrap180(np.degrees(np.arctan2(dx, dy)) - self.heading_deg)
        az = rel if self.clockwise else wrap180(-rel)
        return np.sqrt(ground * ground + self.height_m ** 2), az


class RadarMessage(BaseModel):
    """One radar track update: the wire format on ``{prefix}/{site}/radar/{radar_id}/tracks``.

    Strict (unknown keys are errors) so a gateway that renames a field is caught at the first
    message, counted as malformed, instead of silently dropping a person. When ``lat`` and
    ``lon`` are given (radars with their own GNSS solution) they are used instead of range and
    azimuth; range and azimuth are still required, for coverage checks and for radars that
    cannot localise themselves.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["perimeter.radar/1"] = Field(
        default="perimeter.radar/1", alias="schema", description="message format version")
    radar_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                          description="the radar, as configured in radars[].id")
    track_id: int = Field(ge=0, lt=2 ** 53, description="the radar's own track number")
    time: float = Field(gt=0, allow_inf_nan=False,
                        description="measurement time, epoch seconds (UTC)")
    range_m: float = Field(ge=0, le=100_000, allow_inf_nan=False,
                           description="slant range from the antenna, metres")
    azimuth_deg: float = Field(ge=-360, le=360, allow_inf_nan=False,
                               description="angle from boresight, degrees (clockwise positive "
                                           "unless the radar's config says otherwise)")
    speed_mps: float = Field(0.0, ge=-200, le=200, allow_inf_nan=False,
                             description="speed (or radial velocity) in m/s")
    rcs_dbsm: float | None = Field(None, ge=-100, le=100, allow_inf_nan=False,
                                   description="radar cross-section, dBsm")
    class_: str | None = Field(None, alias="class", max_length=32,
                               description="the radar's classification (person, vehicle, ...)")
    lat: float | None = Field(None, ge=-90, le=90, allow_inf_nan=False,
                              description="target latitude, degrees (WGS 84)")
    lon: float | None = Field(None, ge=-180, le=180, allow_inf_nan=False,
                              description="target longitude, degrees (WGS 84)")

    @model_validator(mode="after")
    def _both(self) -> RadarMessage:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither")
        return self

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)
