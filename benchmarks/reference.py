"""The randomised-zone evaluation's reference: ground-truth tracks in, expected alarms out.

This is deliberately NOT the product's rules (``zones/rules.py``): it is a short, fixed
definition of what a person watching the ground truth would call an alarm, so a change to the
rules moves the score and never the yardstick. It reads only the MOT ground truth, the zone
geometry and the frame rate. Its constants are in seconds, turned into frames per scene:

* **Foot point**: the bottom centre of the ground-truth box, clipped to the frame.
* **Entry** (intrusion): the first frame a track's foot point is inside a polygon (its
  boundary counts as inside) after having been outside (or not yet in view) for at least
  ``REARM_S``. A track first seen inside enters on its first frame. The entry's *visit* lasts
  until the track has been outside for ``REARM_S``; a system alarm for it may come from
  ``EARLY_S`` before the entry frame to the end of the visit.
* **Crossing** (tripwire): the foot point's side of the line changes between two consecutive
  annotated frames of a track (a point exactly on the line has no side and is skipped) and the
  path between them meets the line between its endpoints; with an ``into`` point only moves
  onto the alarmed side count. A system alarm for it may come within ``LINE_WINDOW_S``.
* **Hidden**: rows with ``conf = 0`` (MOT's "ignore": far away or hidden) are where the
  person is, but not observations: they are never inside and never cross.
* **Don't care** (neither missed nor false when a system alarm matches it): a visit that is
  inside for fewer than ``MIN_VISIT_S`` (a toe over the line); an entry with a hidden row of
  its track in the ``REARM_S`` before it (the person may have been inside all along); a
  crossing from or to a hidden row; a crossing within ``REARM_S`` of the same track's previous
  crossing of the same line (a foot hovering on it); a crossing whose foot point stays on
  its new side for fewer than ``MIN_VISIT_S`` of rows (it steps back, or the footage ends).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely

REARM_S = 1.0
MIN_VISIT_S = 0.25
EARLY_S = 0.75
LINE_WINDOW_S = 1.0

INTRUSION = "intrusion"
LINE_CROSSING = "line_crossing"


def frames_for(seconds: float, fps: float, least: int = 1) -> int:
    """A duration in frames of a scene, never below ``least``."""
    return max(least, round(seconds * fps))


@dataclass(frozen=True)
class Track:
    """One ground-truth person: frames (ascending), boxes x1 y1 x2 y2, MOT ``conf`` flags."""

    id: int
    frames: np.ndarray
    boxes: np.ndarray
    counted: np.ndarray

    @property
    def feet(self) -> np.ndarray:
        return np.column_stack(((self.boxes[:, 0] + self.boxes[:, 2]) / 2.0, self.boxes[:, 3]))

    def box_near(self, frame: int, search: int = 5) -> np.ndarray | None:
        """The box at ``frame``, or at the nearest annotated frame within ``search``."""
        i = int(np.searchsorted(self.frames, frame))
        best: tuple[int, int] | None = None
        for j in (i - 1, i):
            if 0 <= j < len(self.frames):
                d = abs(int(self.frames[j]) - frame)
                if d <= search and (best is None or d < best[0]):
                    best = (d, j)
        return None if best is None else self.boxes[best[1]]


def load_tracks(path: Path, frame_size: tuple[int, int]) -> dict[int, Track]:
    """Every ground-truth track of a MOTChallenge ``gt.txt``, ``conf = 0`` rows included."""
    rows = np.loadtxt(path, delimiter=",", ndmin=2)
    w, h = frame_size
    out: dict[int, Track] = {}
    for tid in np.unique(rows[:, 1]).astype(int):
        r = rows[rows[:, 1] == tid]
        r = r[np.argsort(r[:, 0])]
        boxes = np.column_stack((r[:, 2], r[:, 3], r[:, 2] + r[:, 4], r[:, 3] + r[:, 5]))
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        out[int(tid)] = Track(int(tid), r[:, 0].astype(int), boxes, r[:, 6] != 0)
    return out


@dataclass(frozen=True)
class Expected:
    """One alarm the ground truth calls for (or allows, when not ``required``)."""

    kind: str
    zone: str
    line: str | None
    track: int
    frame: int  # entry or crossing frame
    first: int  # earliest frame a system alarm may match it
    last: int  # latest frame a system alarm may match it
    required: bool
    why: str = ""  # why it is only allowed


@dataclass(frozen=True)
class PolygonZone:
    zone: str
    points: list[tuple[float, float]]


@dataclass(frozen=True)
class LineZone:
    zone: str
    line: str
    a: tuple[float, float]
    b: tuple[float, float]
    into: tuple[float, float] | None


def entries(zone: PolygonZone, tracks: dict[int, Track], fps: float) -> list[Expected]:
    """Intrusion entries of every track into one polygon."""
    rearm = frames_for(REARM_S, fps)
    min_visit = frames_for(MIN_VISIT_S, fps, least=2)
    early = frames_for(EARLY_S, fps)
    poly = shapely.Polygon(zone.points)
    out: list[Expected] = []
    for tr in tracks.values():
        feet = tr.feet
        inside = shapely.intersects_xy(poly, feet[:, 0], feet[:, 1]) & tr.counted
        visit: list[int] = []  # indices of inside rows of the current visit
        for k in np.flatnonzero(inside).tolist():
            if visit and tr.frames[k] - tr.frames[visit[-1]] > rearm:
                out.append(_visit(zone, tr, visit, rearm, min_visit, early))
                visit = []
            visit.append(k)
        if visit:
            out.append(_visit(zone, tr, visit, rearm, min_visit, early))
    return out


def _visit(zone: PolygonZone, tr: Track, rows: list[int], rearm: int, min_visit: int,
           early: int) -> Expected:
    start, end = int(tr.frames[rows[0]]), int(tr.frames[rows[-1]])
    before = (tr.frames >= start - rearm) & (tr.frames < start)
    why = ""
    if len(rows) < min_visit:
        why = f"inside for {len(rows)} frame(s) only"
    elif not tr.counted[before].all():
        why = "hidden (conf 0) just before"
    return Expected(INTRUSION, zone.zone, None, tr.id, start, start - early, end + rearm,
                    required=not why, why=why)


def _side(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> np.ndarray:
    d = b - a
    out: np.ndarray = np.sign(d[0] * (p[:, 1] - a[1]) - d[1] * (p[:, 0] - a[0]))
    return out


def crossings(zone: LineZone, tracks: dict[int, Track], fps: float) -> list[Expected]:
    """Tripwire crossings of every track over one line."""
    a, b = np.asarray(zone.a, dtype=float), np.asarray(zone.b, dtype=float)
    want = 0.0 if zone.into is None else float(_side(a, b, np.asarray([zone.into]))[0])
    rearm = frames_for(REARM_S, fps)
    settle = frames_for(MIN_VISIT_S, fps, least=2)
    window = frames_for(LINE_WINDOW_S, fps)
    out: list[Expected] = []
    for tr in tracks.values():
        feet = tr.feet
        side = _side(a, b, feet)
        prev: int | None = None  # last row with a side
        last_cross = -math.inf
        for k in range(len(feet)):
            if side[k] == 0:
                continue
            if prev is not None and side[k] != side[prev] and _within(a, b, feet[prev], feet[k]):
                f = int(tr.frames[k])
                why = ""
                if f - last_cross < rearm:
                    why = "back over the line within the re-arm time"
                elif not (tr.counted[k] and tr.counted[prev]):
                    why = "from or to a hidden (conf 0) row"
                elif not np.all(side[k:k + settle] == side[k]) or k + settle > len(side):
                    why = "does not stay over"
                last_cross = f
                if want in (0.0, side[k]):
                    out.append(Expected(LINE_CROSSING, zone.zone, zone.line, tr.id, f,
                                        f - window, f + window, required=not why, why=why))
            prev = k
    return out


def _within(a: np.ndarray, b: np.ndarray, p: np.ndarray, q: np.ndarray) -> bool:
    """Whether the path p -> q (on opposite sides) meets the line between a and b."""
    d = b - a
    dp = d[0] * (p[1] - a[1]) - d[1] * (p[0] - a[0])
    dq = d[0] * (q[1] - a[1]) - d[1] * (q[0] - a[0])
    x = p + (q - p) * (dp / (dp - dq))
    t = float(np.dot(x - a, d) / np.dot(d, d))
    return 0.0 <= t <= 1.0


def expected_events(polygons: list[PolygonZone], lines: list[LineZone],
                    tracks: dict[int, Track], fps: float) -> list[Expected]:
    """Every expected (or allowed) alarm of one zone set."""
    out: list[Expected] = []
    for p in polygons:
        out.extend(entries(p, tracks, fps))
    for ln in lines:
        out.extend(crossings(ln, tracks, fps))
    return out
