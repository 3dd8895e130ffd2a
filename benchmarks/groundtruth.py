"""MOTChallenge ground truth as per-frame ``Detections``, and the alarms it implies.

The expected alarms come from running the very same ``CameraRules`` over the ground-truth
tracks: the rule semantics (hysteresis, thresholds, one alarm per entry) are shared, so the
score measures detection and tracking, not a second, slightly different rule implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zones.alarm import Alarm
from zones.engine import CameraRules
from zones.tracks import Detections


@dataclass
class GroundTruth:
    """Rows ``frame, id, left, top, width, height, conf, x, y, z`` (conf 1 = counted)."""

    rows: np.ndarray
    frame_count: int

    @classmethod
    def load(cls, path: Path, frame_count: int | None = None) -> GroundTruth:
        rows = np.loadtxt(path, delimiter=",", ndmin=2)
        rows = rows[rows[:, 6] != 0]
        n = int(rows[:, 0].max()) if frame_count is None else frame_count
        return cls(rows, n)

    def frame(self, index: int, *, camera: str, time: float,
              frame_size: tuple[int, int]) -> Detections:
        r = self.rows[self.rows[:, 0] == index]
        boxes = np.column_stack((r[:, 2], r[:, 3], r[:, 2] + r[:, 4], r[:, 3] + r[:, 5]))
        if frame_size[0] and frame_size[1]:
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, frame_size[0])
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, frame_size[1])
        return Detections.create(boxes, np.ones(len(r)), None, r[:, 1].astype(np.int64),
                                 camera=camera, frame=index, time=time, frame_size=frame_size)

    def frames(self, *, camera: str, start_time: float, fps: float,
               frame_size: tuple[int, int]) -> list[Detections]:
        return [self.frame(i, camera=camera, time=start_time + (i - 1) / fps,
                           frame_size=frame_size) for i in range(1, self.frame_count + 1)]


def expected_alarms(rules: CameraRules, frames: list[Detections]) -> list[Alarm]:
    """Every alarm event the rules raise on ground-truth tracks."""
    out: list[Alarm] = []
    for f in frames:
        out.extend(rules.step(f))
    return out


def box_at(frames: list[Detections], track_id: int, frame: int,
           search: int = 5) -> np.ndarray | None:
    """A ground-truth track's box at ``frame``, or at the nearest frame within ``search``."""
    for d in sorted(range(-search, search + 1), key=abs):
        i = frame + d - 1
        if 0 <= i < len(frames):
            hit = frames[i].track_ids == track_id
            if hit.any():
                box: np.ndarray = frames[i].boxes[hit][0]
                return box
    return None
