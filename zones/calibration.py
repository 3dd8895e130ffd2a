"""Ground-plane calibration: a homography from image pixels to site metres.

Four or more image points whose positions on the ground are known (surveyed, or read from a
site plan) fix the mapping of the ground plane. With it a crowd zone has an area in square
metres and a count becomes a density, which is what a stampede threshold is written in.
Pure numpy (normalised DLT) so the core carries no camera library.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from shapely.geometry import Polygon

from zones.geometry import GeometryError
from zones.tracks import FloatArray


def _normaliser(pts: FloatArray) -> FloatArray:
    """Similarity that moves the centroid to 0 and the mean distance to sqrt(2) (Hartley)."""
    c = pts.mean(axis=0)
    d = np.sqrt(((pts - c) ** 2).sum(axis=1)).mean()
    s = np.sqrt(2.0) / d if d > 0 else 1.0
    return np.array([[s, 0.0, -s * c[0]], [0.0, s, -s * c[1]], [0.0, 0.0, 1.0]])


def fit_homography(image: Sequence[Sequence[float]],
                   world: Sequence[Sequence[float]]) -> FloatArray:
    """Least-squares homography mapping ``image`` (px) to ``world`` (m); 4+ point pairs."""
    src = np.asarray(image, dtype=np.float64)
    dst = np.asarray(world, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2:
        raise GeometryError("calibration needs matching lists of [x, y] image and world points")
    if src.shape[0] < 4:
        raise GeometryError(f"calibration needs at least 4 point pairs, got {src.shape[0]}")
    if not (np.all(np.isfinite(src)) and np.all(np.isfinite(dst))):
        raise GeometryError("calibration points must be finite numbers (NaN or infinity)")
    ts, td = _normaliser(src), _normaliser(dst)
    s = (ts @ np.column_stack((src, np.ones(len(src)))).T).T
    d = (td @ np.column_stack((dst, np.ones(len(dst)))).T).T
    rows = []
    for (x, y, _), (u, v, _) in zip(s, d, strict=True):
        rows.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
        rows.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
    _, sv, vt = np.linalg.svd(np.asarray(rows))
    if sv.size >= 8 and sv[7] < 1e-10 * max(sv[0], 1e-300):
        raise GeometryError("calibration points are degenerate (three or more on one line)")
    h = vt[-1].reshape(3, 3)
    h = np.linalg.inv(td) @ h @ ts
    if abs(h[2, 2]) < 1e-12:
        raise GeometryError("calibration is degenerate")
    return np.asarray(h / h[2, 2], dtype=np.float64)


class GroundPlane:
    """Maps image points to metres on the ground."""

    def __init__(self, image: Sequence[Sequence[float]], world: Sequence[Sequence[float]]):
        self.h = fit_homography(image, world)
        self.rms_error_m = float(np.sqrt(np.mean(
            np.sum((self.to_world(np.asarray(image, dtype=np.float64))
                    - np.asarray(world, dtype=np.float64)) ** 2, axis=1))))

    def to_world(self, xy: FloatArray) -> FloatArray:
        """``(N, 2)`` pixels -> ``(N, 2)`` metres."""
        if xy.shape[0] == 0:
            return np.zeros((0, 2))
        p = np.column_stack((xy, np.ones(len(xy)))) @ self.h.T
        w = p[:, 2:3]
        if np.any(np.abs(w) < 1e-12):
            raise GeometryError("point maps to infinity (above the horizon)")
        return np.asarray(p[:, :2] / w, dtype=np.float64)

    def area_m2(self, points: Sequence[tuple[float, float]]) -> float:
        """Ground area of an image polygon; it must lie below the horizon."""
        pts = np.asarray(points, dtype=np.float64)
        p = np.column_stack((pts, np.ones(len(pts)))) @ self.h.T
        if not (np.all(p[:, 2] > 0) or np.all(p[:, 2] < 0)):
            raise GeometryError("zone crosses the horizon of the ground-plane calibration")
        area = float(Polygon(p[:, :2] / p[:, 2:3]).area)
        if area <= 0:
            raise GeometryError("zone has zero ground area under the calibration")
        return area
