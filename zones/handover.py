"""Re-association: which lost track (if any) a new track inside a fence continues.

A tracker loses people behind a post or in a crowd and picks them up again under a new id;
without re-association the new id confirms a second entry and the same person raises twice.
A new track that appears inside a fence without having walked in may continue the confirmed
entry of a track that vanished recently, when:

* **position and motion**: the new foot point lies within ``reach_heights`` body heights of
  the lost person's *path*: the segment from where they were last seen to where their last
  velocity would have carried them since (at most ``predict_seconds``). A person who stopped
  behind the post and one who kept walking are both found; someone appearing behind them or
  across the path is not;
* **appearance** (where the edge computes it): the colour histograms of the two (upper and
  lower body, ``edge/appearance.py``) are at least ``min_similarity`` alike (Bhattacharyya
  coefficient, 1 = identical), so a passer-by who steps into the gap is a new entry. Where
  no look is known (the edge computed none) position and motion decide alone.

Among several candidates the nearest to its path wins, ties broken by likeness. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from zones.config import HandoverConfig
from zones.tracks import FloatArray

VELOCITY_ALPHA = 0.5  # smoothing of a track's foot velocity (1: last step only)
LOOK_ALPHA = 0.3  # smoothing of a track's appearance histogram


@dataclass
class Sighting:
    """Where a track was last seen and how it moved: the rules keep one per track."""

    foot: tuple[float, float]
    time: float
    height: float
    velocity: tuple[float, float] = (0.0, 0.0)  # foot point, px/s (smoothed)
    look: FloatArray | None = None  # appearance histogram (smoothed), if computed


def see(seen: Sighting, foot: tuple[float, float], t: float, height: float,
        look: np.ndarray | None) -> None:
    """Update a track's sighting with this frame: position, smoothed velocity and look."""
    if t > seen.time:
        dt = t - seen.time
        a = VELOCITY_ALPHA
        seen.velocity = (a * (foot[0] - seen.foot[0]) / dt + (1 - a) * seen.velocity[0],
                         a * (foot[1] - seen.foot[1]) / dt + (1 - a) * seen.velocity[1])
    if look is None or not look.any():
        look = seen.look  # not seen (or hidden) this frame: keep what was learnt
    elif seen.look is not None and look.shape == seen.look.shape:
        look = LOOK_ALPHA * look + (1 - LOOK_ALPHA) * seen.look
    seen.foot, seen.time, seen.height, seen.look = foot, t, height, look


def similarity(a: FloatArray | None, b: FloatArray | None) -> float | None:
    """Bhattacharyya coefficient of two appearance rows, per half (upper, lower body) where
    both halves saw pixels, averaged: 1 for one colour distribution, 0 for disjoint ones;
    None when either look is unknown (never computed, or no pixel of the person seen)."""
    if a is None or b is None:
        return None
    halves = np.split(np.sqrt(np.clip(a, 0, None) * np.clip(b, 0, None)), 2)
    seen = [h.sum() for h, x, y in zip(halves, np.split(a, 2), np.split(b, 2), strict=True)
            if x.sum() > 0 and y.sum() > 0]
    return float(np.mean(seen)) if seen else None


def path_distance(new: tuple[float, float], lost: Sighting, t: float,
                  predict_s: float) -> float:
    """Pixels from ``new`` to the lost track's path since it was last seen."""
    p = np.asarray(lost.foot)
    q = p + np.asarray(lost.velocity) * min(max(t - lost.time, 0.0), predict_s)
    x = np.asarray(new)
    d = q - p
    den = float(np.dot(d, d))
    u = 0.0 if den == 0 else min(1.0, max(0.0, float(np.dot(x - p, d)) / den))
    return float(np.hypot(*(x - (p + u * d))))


def needs_appearance(cfg: HandoverConfig) -> bool:
    """Whether re-association compares looks (the edge then computes them)."""
    return cfg.appearance and cfg.reach_heights > 0


def pick(cfg: HandoverConfig, new: Sighting, t: float,
         lost: Iterable[tuple[int, Sighting]]) -> int | None:
    """The lost track ``new`` continues, or None."""
    if cfg.reach_heights <= 0:
        return None
    best: tuple[float, float, int] | None = None
    for tid, old in lost:
        reach = cfg.reach_heights * max(new.height, old.height)
        dist = path_distance(new.foot, old, t, cfg.predict_seconds)
        if dist > reach:
            continue
        like = similarity(new.look, old.look) if cfg.appearance else None
        if like is not None and like < cfg.min_similarity:
            continue
        key = (dist / reach, -(like or 0.0), tid)
        if best is None or key < best:
            best = key
    return None if best is None else best[2]
