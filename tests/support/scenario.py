"""Scenario helpers: people as foot points or boxes per frame, in, alarm events out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from zones.alarm import Alarm
from zones.tracks import Detections

FPS = 10.0
T0 = 1_700_000_000.0


def people(frame: int, feet: dict[int, tuple[float, float]], *, camera: str = "cam",
           fps: float = FPS, size: tuple[int, int] = (100, 100)) -> Detections:
    """Tracked people standing at the given foot points (a 10x20 box above each)."""
    ids = list(feet)
    boxes = [[x - 5, y - 20, x + 5, y] for x, y in (feet[i] for i in ids)]
    return Detections.create(np.asarray(boxes, dtype=float).reshape(-1, 4), None, None, ids,
                             camera=camera, frame=frame, time=T0 + (frame - 1) / fps,
                             frame_size=size)


Feet = dict[int, tuple[float, float]]


def walk(track: int, points: Sequence[tuple[float, float] | None]) -> list[Feet]:
    """One person's foot point per frame (None: not seen that frame)."""
    return [{} if p is None else {track: p} for p in points]


def merge(*walks: list[dict[int, tuple[float, float]]]) -> list[dict[int, tuple[float, float]]]:
    n = max(len(w) for w in walks)
    out: list[dict[int, tuple[float, float]]] = [{} for _ in range(n)]
    for w in walks:
        for i, d in enumerate(w):
            out[i].update(d)
    return out


def run(rule: object, frames: Iterable[dict[int, tuple[float, float]]], th: object,
        fps: float = FPS) -> list[Alarm]:
    events: list[Alarm] = []
    for i, feet in enumerate(frames, start=1):
        events.extend(rule.step(people(i, feet, fps=fps), th))  # type: ignore[attr-defined]
    return events


def summary(events: list[Alarm]) -> list[tuple[str, str, int | None, int]]:
    """(kind, state, track, frame) per event: what scenario tables compare."""
    return [(e.kind.value, e.state.value, e.track_id, e.frame) for e in events]
