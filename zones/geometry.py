"""Electronic fences: polygons and tripwires in source pixels, tested against foot points.

Polygons are prepared once (Shapely 2 ``prepare``) and tested with the vectorised
``intersects_xy``, so a frame with fifty people costs one call per zone, not fifty. A point on
the boundary counts as inside: a person standing on the cliff line is already at risk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.validation import explain_validity

from zones.tracks import FloatArray

Point = tuple[float, float]

# Hand-drawn fences have tens of vertices, a surveyed ground zone a few hundred; a polygon of
# 100,000 is a mistake or an attack that costs seconds and hundreds of MB per check.
MAX_POLYGON_POINTS = 1000


class ZoneKind(StrEnum):
    CLIFF = "cliff"
    WATER = "water"
    CROWD = "crowd"
    RESTRICTED = "restricted"


class Risk(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class GeometryError(ValueError):
    """A fence that cannot be used; the message says what is wrong with it."""


def to_pixels(points: Sequence[Sequence[float]], frame_size: tuple[int, int],
              coords: str = "auto") -> list[Point]:
    """Resolve fence vertices to source pixels.

    ``coords`` is ``normalized`` ([0, 1] of width and height), ``pixels``, or ``auto``: normalized
    when every value is within [0, 1]. A fence drawn on a 1920 px stream keeps working on the
    704 px sub-stream only when it is normalized, so both are accepted.
    """
    pts = [(float(p[0]), float(p[1])) for p in points]
    if coords not in ("auto", "normalized", "pixels"):
        raise GeometryError(f"coords must be auto, normalized or pixels, not {coords!r}")
    normalized = coords == "normalized" or (
        coords == "auto" and all(0.0 <= v <= 1.0 for p in pts for v in p)
    )
    if not normalized:
        return pts
    w, h = frame_size
    if w <= 0 or h <= 0:
        raise GeometryError("normalized coordinates need the frame size")
    return [(x * w, y * h) for x, y in pts]


def check_polygon(points: Sequence[Point]) -> Polygon:
    """A valid simple polygon of 3 to ``MAX_POLYGON_POINTS`` finite points, or a GeometryError
    saying why not."""
    if len(points) < 3:
        raise GeometryError(f"a polygon needs at least 3 points, got {len(points)}")
    if len(points) > MAX_POLYGON_POINTS:
        raise GeometryError(f"a polygon may have at most {MAX_POLYGON_POINTS} points, got "
                            f"{len(points)}")
    for i, p in enumerate(points):
        if not all(math.isfinite(v) for v in p):
            raise GeometryError(f"point {i} is not a finite number: {list(p)}")
    poly = Polygon(points)
    if not poly.is_valid:
        raise GeometryError(f"polygon is not simple: {explain_validity(poly)}")
    if poly.area <= 0.0:
        raise GeometryError("polygon has zero area")
    return poly


def check_inside_frame(points: Sequence[Point], frame_size: tuple[int, int],
                       tolerance: float = 1.0) -> None:
    """Reject vertices outside the image: a fence there can never see anyone."""
    w, h = frame_size
    if w <= 0 or h <= 0:
        return
    for x, y in points:
        if not (-tolerance <= x <= w + tolerance and -tolerance <= y <= h + tolerance):
            raise GeometryError(
                f"point ({x:g}, {y:g}) lies outside the {w}x{h} frame"
            )


@dataclass(eq=False)
class Fence:
    """A zone polygon in source pixels, prepared for fast point tests."""

    id: str
    kind: ZoneKind
    risk: Risk
    points: list[Point]
    polygon: Polygon = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.polygon = check_polygon(self.points)
        shapely.prepare(self.polygon)

    def contains(self, xy: FloatArray) -> np.ndarray:
        """Boolean mask of which ``(N, 2)`` points lie inside or on the boundary."""
        if xy.shape[0] == 0:
            return np.zeros(0, dtype=bool)
        return np.asarray(shapely.intersects_xy(self.polygon, xy[:, 0], xy[:, 1]), dtype=bool)


@dataclass(eq=False)
class Tripwire:
    """A directed line segment. ``into`` is a point on the side whose entry is alarmed.

    Direction comes from this explicit point, never from the shape of a region, so a crossing
    towards the water is told apart from one away from it whatever the line's orientation.
    ``into=None`` alarms both directions.
    """

    id: str
    a: Point
    b: Point
    into: Point | None = None

    def __post_init__(self) -> None:
        ax, ay = self.a
        bx, by = self.b
        self._d = np.array([bx - ax, by - ay], dtype=np.float64)
        self._len = float(np.hypot(*self._d))
        if self._len < 1.0:
            raise GeometryError("tripwire endpoints must be at least 1 px apart")
        if self.into is not None and abs(self.signed_distance(np.array([self.into]))[0]) < 1e-9:
            raise GeometryError("tripwire 'into' point lies on the line itself")

    def signed_distance(self, xy: FloatArray) -> FloatArray:
        """Perpendicular distance in pixels, positive on one side, negative on the other."""
        rel = xy - np.asarray(self.a, dtype=np.float64)
        out: FloatArray = (self._d[0] * rel[:, 1] - self._d[1] * rel[:, 0]) / self._len
        return out

    @property
    def alarmed_sign(self) -> int:
        """+1 or -1 for the alarmed side, 0 when both directions alarm."""
        if self.into is None:
            return 0
        return 1 if self.signed_distance(np.array([self.into]))[0] > 0 else -1

    def crosses_segment(self, p: FloatArray, q: FloatArray) -> bool:
        """Whether the move from ``p`` to ``q`` passes between the endpoints, not beyond them."""
        seg = shapely.LineString([self.a, self.b])
        path = shapely.LineString([tuple(p), tuple(q)])
        return bool(seg.intersects(path))
