"""Random zone sets drawn where people walk, as a new user would draw them.

Zones in ``config/`` were drawn by the people who tuned the rules; a site's zones are not.
Each zone set is drawn from one seed (``numpy.random.default_rng([scene, seed])``, so a seed
names the same zones on every machine) from the ground truth's foot points, never from the
product's detections:

* ``POLYGONS`` polygons, each centred on a random ground-truth foot point, sized by the body
  height of the person standing there: a star-shaped polygon (3-7 vertices), a rotated
  rectangle, or a *bank* (everything beyond a random line through the point, as a river or
  cliff edge is drawn), clipped to the annotated ground (below);
* ``TRIPWIRES`` tripwires, each across a ground-truth track where it moves, at up to 50 degrees
  from square to the motion, 1.5-5 body heights long, half of them directed (an ``into`` point
  on a random side), half both ways.

Zones stay on the *annotated ground*: inside the convex hull of the ground truth's foot
points grown by ``GROUND_MARGIN`` body heights, and ``EDGE_MARGIN`` body heights inside the
frame's edges (median body height of the scene). The ground truth annotates people only once
they are in view, and not at all behind the building's windows (TUD-Campus) or in the far
back; a zone beyond would score real people the annotators left out as false alarms.

Every zone is ``risk: high`` (cliff, water or restricted at random): the evaluation's delay
goal only makes sense for zones that alarm on the second frame. Seeds are split in two:
``TUNE_SEEDS`` may be looked at while tuning the rules; ``REPORT_SEEDS`` are the held-out ones
the results quote.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import LineString, Polygon, box

from benchmarks.reference import LineZone, PolygonZone, Track
from zones.config import LineConfig, ZoneConfig
from zones.geometry import Risk, ZoneKind

POLYGONS = 3
TRIPWIRES = 3
TUNE_SEEDS = tuple(range(0, 20))
REPORT_SEEDS = tuple(range(1000, 1020))
KINDS = ("cliff", "water", "restricted")
MIN_MOVE_PX = 3.0  # a track "moves" where its foot point travels this far in 3 frames
GROUND_MARGIN = 0.25  # body heights around the hull of the annotated foot points
EDGE_MARGIN = 0.3  # body heights inside the frame's edges


@dataclass(frozen=True)
class ZoneSet:
    """One seed's zones: configs for the product, geometry for the reference."""

    seed: int
    configs: list[ZoneConfig]
    polygons: list[PolygonZone]
    lines: list[LineZone]


@dataclass(frozen=True)
class _Feet:
    """Every ground-truth foot point with the body height there and its track's motion."""

    xy: np.ndarray
    height: np.ndarray
    motion: np.ndarray  # unit direction of travel (0, 0 where standing)


def _feet(tracks: dict[int, Track]) -> _Feet:
    xy, hs, mv = [], [], []
    for tr in tracks.values():
        f = tr.feet
        d = np.zeros_like(f)
        if len(f) > 3:
            d[:-3] = f[3:] - f[:-3]
        n = np.linalg.norm(d, axis=1, keepdims=True)
        d = np.where(n >= MIN_MOVE_PX, d / np.maximum(n, 1e-9), 0.0)
        xy.append(f)
        hs.append(tr.boxes[:, 3] - tr.boxes[:, 1])
        mv.append(d)
    return _Feet(np.vstack(xy), np.concatenate(hs), np.vstack(mv))


def _clip(poly: Polygon, ground: Polygon) -> list[tuple[float, float]] | None:
    """The part of ``poly`` on the annotated ground as a simple polygon, or None."""
    part = poly.intersection(ground)
    if isinstance(part, shapely.MultiPolygon):
        part = max(part.geoms, key=lambda g: g.area)
    if not isinstance(part, Polygon) or part.is_empty or part.area < 100.0:
        return None
    part = shapely.set_precision(part.simplify(0.5), 0.01)
    if not isinstance(part, Polygon) or not part.is_valid or part.area < 100.0:
        return None
    return [(float(x), float(y)) for x, y in list(part.exterior.coords)[:-1]]


def _polygon(rng: np.random.Generator, c: np.ndarray, h: float, ground: Polygon
             ) -> list[tuple[float, float]] | None:
    shape = rng.choice(["star", "rect", "bank"], p=[0.4, 0.3, 0.3])
    theta = rng.uniform(0, np.pi)
    if shape == "bank":
        # The far side of a line through (near) the foot point, out to the edge of the ground.
        u = np.array([np.cos(theta), np.sin(theta)])
        n = np.array([-u[1], u[0]]) * rng.choice([-1.0, 1.0])
        o = c + n * rng.uniform(-0.5, 0.5) * h
        big = 4000.0
        quad = Polygon([o - u * big, o + u * big, o + u * big + n * big, o - u * big + n * big])
        return _clip(quad, ground)
    r = rng.uniform(0.8, 3.0) * h
    if shape == "rect":
        w, d = r * rng.uniform(0.6, 1.4), r * rng.uniform(0.4, 1.0)
        corners = np.array([[-w, -d], [w, -d], [w, d], [-w, d]])
    else:
        k = int(rng.integers(3, 8))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = r * rng.uniform(0.5, 1.0, k)
        corners = np.column_stack((rad * np.cos(ang), rad * np.sin(ang)))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pts = corners @ rot.T + c + rng.uniform(-0.3, 0.3, 2) * r
    poly = Polygon(pts)
    if not poly.is_valid:
        return None
    return _clip(poly, ground)


def _tripwire(rng: np.random.Generator, feet: _Feet, moving: np.ndarray, ground: Polygon,
              ) -> tuple[tuple[float, float], tuple[float, float],
                         tuple[float, float] | None] | None:
    i = int(rng.choice(moving))
    c, h, m = feet.xy[i], float(feet.height[i]), feet.motion[i]
    # Square to the motion, turned by up to 50 degrees, slid along itself.
    ang = np.arctan2(m[1], m[0]) + np.pi / 2 + np.deg2rad(rng.uniform(-50, 50))
    u = np.array([np.cos(ang), np.sin(ang)])
    half = rng.uniform(0.75, 2.5) * h
    mid = c + u * rng.uniform(-0.6, 0.6) * half
    seg = LineString([mid - u * half, mid + u * half]).intersection(ground)
    if not isinstance(seg, LineString) or seg.length < max(20.0, 0.5 * h):
        return None
    (ax, ay), (bx, by) = seg.coords[0], seg.coords[-1]
    if rng.random() < 0.5:
        return (ax, ay), (bx, by), None
    n = np.array([-u[1], u[0]]) * rng.choice([-1.0, 1.0])
    into = np.asarray(seg.interpolate(0.5, normalized=True).coords[0]) + n * 0.5 * h
    minx, miny, maxx, maxy = ground.bounds
    into = np.clip(into, [minx + 1, miny + 1], [maxx - 1, maxy - 1])
    return (ax, ay), (bx, by), (float(into[0]), float(into[1]))


def _ground(feet: _Feet, frame_size: tuple[int, int]) -> Polygon:
    """Where zones may lie: the annotated ground, inside the frame's edges."""
    h = float(np.median(feet.height))
    hull = shapely.MultiPoint(feet.xy).convex_hull.buffer(GROUND_MARGIN * h)
    m = EDGE_MARGIN * h
    inner = box(m, m, frame_size[0] - m, frame_size[1] - m)
    area = hull.intersection(inner)
    if isinstance(area, shapely.MultiPolygon):
        area = max(area.geoms, key=lambda g: g.area)
    if not isinstance(area, Polygon) or area.is_empty:
        raise ValueError("the ground truth's foot points span no area inside the frame")
    return area


def draw(scene: str, seed: int, tracks: dict[int, Track], frame_size: tuple[int, int]
         ) -> ZoneSet:
    """The zone set of ``seed`` on ``scene`` (deterministic)."""
    rng = np.random.default_rng([zlib.crc32(scene.encode()), seed])
    feet = _feet(tracks)
    ground = _ground(feet, frame_size)
    moving = np.flatnonzero(np.linalg.norm(feet.motion, axis=1) > 0)
    configs: list[ZoneConfig] = []
    polygons: list[PolygonZone] = []
    lines: list[LineZone] = []
    while len(polygons) < POLYGONS:
        i = int(rng.integers(len(feet.xy)))
        pts = _polygon(rng, feet.xy[i], float(feet.height[i]), ground)
        if pts is None:
            continue
        zid = f"s{seed}-z{len(polygons)}"
        polygons.append(PolygonZone(zid, pts))
        configs.append(ZoneConfig(id=zid, kind=ZoneKind(rng.choice(KINDS)), risk=Risk.HIGH,
                                  polygon=pts, coords="pixels"))
    while len(lines) < TRIPWIRES:
        wire = _tripwire(rng, feet, moving, ground)
        if wire is None:
            continue
        a, b, into = wire
        zid, lid = f"s{seed}-w{len(lines)}", f"w{len(lines)}"
        lines.append(LineZone(zid, lid, a, b, into))
        # A tripwire's zone only names the alarm (kind, risk); it runs no polygon rule.
        configs.append(ZoneConfig(
            id=zid, kind=ZoneKind(rng.choice(KINDS)), risk=Risk.HIGH, coords="pixels",
            polygon=[(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)], rules=[],
            lines=[LineConfig(id=lid, points=(a, b), into=into)]))
    return ZoneSet(seed, configs, polygons, lines)
