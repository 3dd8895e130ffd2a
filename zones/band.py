"""Hysteresis in space: a band around a fence's edge (or a tripwire) that a foot must clear.

A foot point is noisy: the detector's box bottom moves a few pixels from frame to frame, and a
person standing on a fence line is seen inside, outside, inside. Counting each "outside" as
leaving raises a new alarm at the next "inside". Instead a foot counts as *out* only once it
is beyond a band around the edge, as wide as ``band_m`` on the ground where the camera is
calibrated (so the band means the same on near and far people), else ``band_heights`` of the
person's own box height (a person is about 1.7 m tall, so 0.15 heights is about 0.25 m).

With a calibration the distance is measured on the ground: the foot point and the nearest
point of the edge in the image are both projected and their distance taken in metres. Where
the projection fails (a point above the horizon) the band falls back to body heights.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import shapely

from zones.calibration import GroundPlane
from zones.geometry import Fence, Tripwire
from zones.tracks import FloatArray

BoolArray = npt.NDArray[np.bool_]
BODY_M = 1.7  # a person's height, to bound a band in metres by box heights


def _ground_distance(ground: GroundPlane, p: FloatArray, q: FloatArray) -> FloatArray:
    """Metres between image points ``p`` and ``q`` on the ground; NaN where unprojectable."""
    h = ground.h
    hom = np.concatenate((p, q)) @ h[:, :2].T + h[:, 2]
    hp, hq = hom[:len(p)], hom[len(p):]
    ok = (np.abs(hp[:, 2]) > 1e-9) & (np.abs(hq[:, 2]) > 1e-9) & (hp[:, 2] * hq[:, 2] > 0)
    out = np.full(len(p), np.nan)
    if ok.any():
        d = hp[ok, :2] / hp[ok, 2:3] - hq[ok, :2] / hq[ok, 2:3]
        out[ok] = np.sqrt((d * d).sum(axis=1))
    return out


class EdgeBand:
    """Which foot points are clear of a fence edge or a tripwire, beyond the band."""

    def __init__(self, band_m: float, band_heights: float, ground: GroundPlane | None = None):
        self.band_m = band_m
        self.band_heights = band_heights
        self.ground = ground

    @property
    def off(self) -> bool:
        return self.band_heights <= 0 if self.ground is None else self.band_m <= 0

    def _beyond(self, feet: FloatArray, nearest: FloatArray, heights: FloatArray) -> BoolArray:
        px = np.hypot(*(feet - nearest).T)
        beyond: BoolArray = px > self.band_heights * heights
        if self.ground is not None:
            metres = _ground_distance(self.ground, feet, nearest)
            known = ~np.isnan(metres)
            beyond[known] = metres[known] > self.band_m
        return beyond

    def clear_of_fence(self, fence: Fence, feet: FloatArray, heights: FloatArray,
                       outside: BoolArray) -> BoolArray:
        """For feet ``outside`` the fence: beyond the band around its edge."""
        out = np.zeros(len(feet), dtype=bool)
        if not outside.any():
            return out
        if self.off:
            return outside.copy()
        # Feet well beyond the band from the fence's bounds (twice the band, a person being
        # about 1.7 m tall, and at least a body height) are clear without an exact distance.
        x0, y0, x1, y1 = fence.polygon.bounds
        reach = heights * max(1.0, 2.0 * self.band_heights, 2.0 * self.band_m / BODY_M)
        near = outside & (feet[:, 0] > x0 - reach) & (feet[:, 0] < x1 + reach) & (
            feet[:, 1] > y0 - reach) & (feet[:, 1] < y1 + reach)
        out[outside & ~near] = True
        if near.any():
            pts = shapely.points(feet[near])
            lines = shapely.shortest_line(fence.polygon.exterior, pts)
            nearest = shapely.get_coordinates(shapely.get_point(lines, 0))
            out[near] = self._beyond(feet[near], nearest, heights[near])
        return out

    def clear_of_line(self, wire: Tripwire, feet: FloatArray, heights: FloatArray,
                      dist: FloatArray) -> BoolArray:
        """Feet beyond the band on either side of the tripwire's line (``dist``: signed px)."""
        if len(feet) == 0:
            return np.zeros(0, dtype=bool)
        if self.off:
            return np.ones(len(feet), dtype=bool)
        d = np.asarray(wire.b, dtype=np.float64) - np.asarray(wire.a, dtype=np.float64)
        normal = np.array([-d[1], d[0]]) / np.hypot(*d)
        nearest = feet - dist[:, None] * normal
        return self._beyond(feet, nearest, heights)
