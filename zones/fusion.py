"""Radar-camera fusion on the ground plane: is the radar's target a person a camera also sees?

A radar sees through fog, rain and the dark but cannot tell a person from a deer or a
swaying branch; a camera can, but loses people at night and at range. Where both see the same
spot on the ground at the same moment, the alarm is far more credible, so a fused alarm
carries both sources and a higher confidence. Where only the radar sees someone, its alarm
still fires: a person in the dark at a cliff edge is exactly the case radar is for.

Camera tracks are projected to site metres through each camera's ground-plane calibration
(foot points); radar tracks are already there. Association is one-to-one over all current
tracks of one radar against all fresh camera tracks: optimal (Hungarian, SciPy's
``linear_sum_assignment``) where SciPy is installed, greedy nearest-first otherwise; pairs
farther apart than ``gate_m`` never match. One-to-one matters: two people walking side by
side must not both borrow the one person the camera confirmed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from zones.tracks import FloatArray, IntArray

try:  # SciPy is optional: the greedy fallback is exact whenever gated pairs do not compete
    from scipy.optimize import linear_sum_assignment as _lsa
except ImportError:  # pragma: no cover - exercised by forcing method="greedy" in the tests
    _lsa = None

HAVE_SCIPY = _lsa is not None


def associate(a: FloatArray, b: FloatArray, gate_m: float,
              method: str = "auto") -> list[tuple[int, int, float]]:
    """One-to-one pairs ``(i, j, distance)`` of ``(N, 2)`` ``a`` and ``(M, 2)`` ``b`` points
    closer than ``gate_m``, sorted by ``i``.

    ``hungarian`` maximises the number of gated pairs, then minimises their total distance;
    ``greedy`` takes the closest remaining pair first; ``auto`` is hungarian when SciPy is
    installed.
    """
    if method not in ("auto", "hungarian", "greedy"):
        raise ValueError(f"method must be auto, hungarian or greedy, not {method!r}")
    if len(a) == 0 or len(b) == 0:
        return []
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2))
    ok = d <= gate_m
    if not ok.any():
        return []
    use_lsa = method == "hungarian" or (method == "auto" and HAVE_SCIPY)
    if use_lsa and _lsa is not None:
        big = gate_m * (len(a) + len(b) + 1) * 10.0  # any gated pair beats every ungated one
        rows, cols = _lsa(np.where(ok, d, big))
        pairs = [(int(i), int(j), float(d[i, j])) for i, j in zip(rows, cols, strict=True)
                 if ok[i, j]]
    else:
        pairs = []
        used_a: set[int] = set()
        used_b: set[int] = set()
        for flat in np.argsort(np.where(ok, d, np.inf), axis=None, kind="stable"):
            i, j = divmod(int(flat), d.shape[1])
            if not ok[i, j]:
                break
            if i not in used_a and j not in used_b:
                used_a.add(i)
                used_b.add(j)
                pairs.append((i, j, float(d[i, j])))
    return sorted(pairs)


def fused_confidence(radar: float, camera_score: float, distance_m: float,
                     gate_m: float) -> float:
    """Two independent witnesses: ``1 - (1 - radar) * (1 - camera * closeness)``.

    ``closeness`` falls linearly from 1 (same spot) to 0 (at the gate), so a marginal match
    adds little and the result is never below the radar-only confidence.
    """
    closeness = max(0.0, 1.0 - distance_m / gate_m)
    c = min(max(camera_score, 0.0), 1.0) * closeness
    return round(1.0 - (1.0 - radar) * (1.0 - c), 4)


@dataclass(frozen=True)
class CameraView:
    """One camera's tracked people of one frame, on the ground (site metres)."""

    camera: str
    time: float
    track_ids: IntArray
    xy: FloatArray
    scores: FloatArray


@dataclass(frozen=True)
class Match:
    camera: str
    camera_track: int
    distance_m: float
    score: float


def match_radar_track(track: int, radar_tracks: Mapping[int, tuple[float, float]],
                      views: Mapping[str, CameraView], time: float, gate_m: float,
                      max_age_s: float, method: str = "auto") -> Match | None:
    """The camera track assigned to radar ``track`` among all current tracks of its radar.

    ``radar_tracks``: latest position of every live track of the radar (``track`` included);
    ``views``: the latest view of each camera; views older (or newer) than ``max_age_s`` from
    ``time`` are ignored. Several cameras may see one person: the assignment then picks one.
    """
    if track not in radar_tracks:
        return None
    fresh = [v for v in views.values() if abs(time - v.time) <= max_age_s and len(v.xy)]
    if not fresh:
        return None
    rids = list(radar_tracks)
    a = np.asarray([radar_tracks[r] for r in rids], dtype=np.float64).reshape(-1, 2)
    b = np.concatenate([v.xy for v in fresh])
    owner = [(v, k) for v in fresh for k in range(len(v.xy))]
    me = rids.index(track)
    for i, j, dist in associate(a, b, gate_m, method):
        if i == me:
            view, k = owner[j]
            return Match(view.camera, int(view.track_ids[k]), round(dist, 3),
                         float(view.scores[k]))
    return None
