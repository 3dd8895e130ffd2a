"""Whether the box keeps up with a camera: detections achieved against ``detect_every``.

A camera whose stream delivers ``f`` frames/s should get ``f / k`` detections/s. Achieved below
80% of that for two windows in a row means the box is over capacity (the round-robin share of
one inference thread is too small); it clears above 90%. Pure: it is given counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.metrics import EdgeMetrics


@dataclass
class Capacity:
    """One window's verdict for a camera."""

    stream_fps: float
    detect_fps: float
    target_fps: float
    over: bool
    changed: bool

    def export(self, metrics: EdgeMetrics, camera: str) -> None:
        metrics.camera_fps.labels(camera).set(self.stream_fps)
        metrics.detect_fps.labels(camera).set(self.detect_fps)
        metrics.detect_target_fps.labels(camera).set(self.target_fps)
        metrics.over_capacity.labels(camera).set(1 if self.over else 0)


class CapacityMonitor:
    """Detection rate achieved against the rate ``detect_every`` implies (pure: give it counts)."""

    def __init__(self, detect_every: int, enter: float = 0.8, leave: float = 0.9):
        self.k, self.enter, self.leave = detect_every, enter, leave
        self.over = False
        self._low_windows = 0
        self._base: tuple[float, int, int] | None = None  # (time, frames, detections)

    def window(self, now: float, frames: int, detections: int) -> Capacity | None:
        """Close a window at ``now`` given cumulative counts; None for the first call."""
        base, self._base = self._base, (now, frames, detections)
        if base is None or now <= base[0]:
            return None
        dt = now - base[0]
        stream = (frames - base[1]) / dt
        det = (detections - base[2]) / dt
        target = stream / self.k
        was = self.over
        if target <= 0:
            self._low_windows = 0
            self.over = False
        elif det < self.enter * target:
            self._low_windows += 1
            self.over = self.over or self._low_windows >= 2
        else:
            self._low_windows = 0
            if det >= self.leave * target:
                self.over = False
        return Capacity(stream, det, target, self.over, self.over != was)
