"""Pieces of the live runtime that decide things: strided tracking, capacity, camera status.

``StridedTracker``: with ``detect_every = k`` the detector runs on one frame in k and ByteTrack
is stepped only with those frames. Stepping it with empty detections in between would be
wrong, not just wasteful: the library ages every track as a miss, drops a young track at its
first miss (so no new person would ever be confirmed) and outputs only tracks matched in that
very frame (so rules would see everyone vanish and clear). Frames in between step the rules
on *predicted* tracks instead: each confirmed track moves on at the velocity of its last two
observations (the constant-velocity model ByteTrack's own Kalman filter uses), for at most
``max_extrapolate_s``. Rules therefore step on every processed frame, on frame time: dwell,
``intrusion_seconds`` and crowd hold clocks run, a track that walks in between detections is
seen inside without waiting for the next detection, and people never blink out. Frame-count
thresholds (``intrusion_frames``) then count processed frames, of which only one in k is an
observation: a site that runs ``detect_every > 1`` should express confirmation in seconds.
A track still needs ``tracker.min_hits`` real detections before it has an id at all.

``CapacityMonitor``: a camera whose stream delivers ``f`` frames/s should get ``f / k``
detections/s. Achieved below 80% of that for two windows in a row means the box is over
capacity (the round-robin share of one inference thread is too small); it clears above 90%.

``LiveCamera`` holds one camera's state in the worker's inference thread.

``StatusBoard``: one status per camera (online, degraded, offline, with a reason) from the
capture thread (connection) and the inference thread (capacity, stalls), published when it
changes to a callback (MQTT, retained) and Prometheus.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge.config import CameraConfig
from edge.livesource import CameraState, LiveSource
from edge.source import Frame
from edge.tracker import ByteTracker
from zones.engine import CameraRules
from zones.tracks import Detections, FloatArray

if TYPE_CHECKING:
    from edge.metrics import CameraMetrics, EdgeMetrics

log = logging.getLogger(__name__)


class StridedTracker:
    """ByteTrack on detection frames, constant-velocity prediction on the frames between."""

    def __init__(self, tracker: ByteTracker, max_extrapolate_s: float = 1.0, alpha: float = 0.5):
        self._tracker = tracker
        self.max_extrapolate_s = max_extrapolate_s
        self.alpha = alpha  # smoothing of the velocity estimate (1: last step only)
        self._last: Detections | None = None
        self._seen: dict[int, tuple[float, FloatArray]] = {}  # id -> (time, box)
        self._vel: dict[int, FloatArray] = {}  # id -> box corners' px/s

    def update(self, dets: Detections) -> Detections:
        """A detection frame: ByteTrack, and each track's velocity from its previous sighting."""
        tracks = self._tracker.update(dets)
        seen: dict[int, tuple[float, FloatArray]] = {}
        vel: dict[int, FloatArray] = {}
        for tid, box in zip(tracks.track_ids.tolist(), tracks.boxes, strict=True):
            prev = self._seen.get(tid)
            v = np.zeros(4)
            if prev is not None and tracks.time > prev[0]:
                step = (box - prev[1]) / (tracks.time - prev[0])
                old = self._vel.get(tid)
                v = step if old is None else self.alpha * step + (1 - self.alpha) * old
            seen[tid], vel[tid] = (tracks.time, box.copy()), v
        self._seen, self._vel, self._last = seen, vel, tracks
        return tracks

    def predict(self, frame: int, t: float) -> Detections:
        """A frame without detection: the last tracks moved on to time ``t``."""
        last = self._last
        if last is None or len(last) == 0:
            return Detections.empty(camera=last.camera if last else "", frame=frame, time=t,
                                    frame_size=last.frame_size if last else (0, 0))
        dt = min(max(t - last.time, 0.0), self.max_extrapolate_s)
        vel = np.array([self._vel.get(tid, np.zeros(4)) for tid in last.track_ids.tolist()])
        boxes = last.boxes + vel.reshape(-1, 4) * dt
        w, h = last.frame_size
        if w and h:
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        return Detections.create(boxes, last.scores, last.class_ids, last.track_ids,
                                 camera=last.camera, frame=frame, time=t,
                                 frame_size=last.frame_size)


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


Publish = Callable[[str, str], None]  # (camera, JSON payload)


class StatusBoard:
    """Each camera's state and reason; publishes changes (thread-safe).

    The capture thread owns the connection (online/offline); the inference thread may mark
    a connected camera degraded (over capacity, frames late). Offline wins over degraded.
    """

    def __init__(self, cameras: list[str], edge_id: str, publish: Publish | None = None,
                 on_change: Callable[[str, CameraState, str], None] | None = None):
        self.edge_id = edge_id
        self._publish = publish
        self._on_change = on_change
        self._lock = threading.Lock()
        self._order = threading.Lock()
        self._link: dict[str, tuple[CameraState, str]] = {
            c: (CameraState.OFFLINE, "connecting") for c in cameras}
        self._degraded: dict[str, str | None] = dict.fromkeys(cameras)
        self._shown: dict[str, tuple[CameraState, str] | None] = dict.fromkeys(cameras)

    def link(self, camera: str, state: CameraState, reason: str) -> None:
        with self._lock:
            self._link[camera] = (state, reason)
        self._refresh(camera)

    def degrade(self, camera: str, reason: str | None) -> None:
        """Mark (a reason) or unmark (None) a connected camera as degraded."""
        with self._lock:
            self._degraded[camera] = reason
        self._refresh(camera)

    def get(self, camera: str) -> tuple[CameraState, str]:
        with self._lock:
            return self._effective(camera)

    def _effective(self, camera: str) -> tuple[CameraState, str]:
        link = self._link[camera]
        why = self._degraded[camera]
        if link[0] is CameraState.ONLINE and why:
            return CameraState.DEGRADED, why
        return link

    def _refresh(self, camera: str) -> None:
        with self._order:  # two threads' changes are announced in the order decided
            with self._lock:
                now = self._effective(camera)
                if now == self._shown[camera]:
                    return
                self._shown[camera] = now
            self.announce(camera, *now)

    def announce(self, camera: str, state: CameraState, reason: str) -> None:
        if self._on_change is not None:
            self._on_change(camera, state, reason)
        if self._publish is not None:
            self._publish(camera, json.dumps({
                "state": state.value, "camera": camera, "edge_id": self.edge_id,
                "reason": reason, "time": time.time()}))

    def announce_all(self, state: CameraState, reason: str) -> None:
        """Every camera to ``state`` (``offline`` on a clean stop)."""
        for camera in list(self._link):
            with self._order:
                with self._lock:
                    self._link[camera] = (state, reason)
                    self._shown[camera] = (state, reason)
                self.announce(camera, state, reason)


@dataclass
class LiveCamera:
    """One camera's state in the inference thread."""

    index: int
    cfg: CameraConfig
    source: LiveSource
    tracker: StridedTracker
    capacity: CapacityMonitor
    metrics: CameraMetrics | None = None
    rules: CameraRules | None = None
    size: tuple[int, int] | None = None
    failed: str | None = None  # a config problem found at the first frame: not processed
    last_detect: int | None = None
    processed: int = 0
    detections: int = 0
    alarms: int = 0
    skipped_seen: int = 0
    over: str | None = None  # over capacity: why
    reconnects_seen: int = 0
    evidence: LiveSource | None = None  # the main stream, for snapshots (evidence_source)
    evidence_last: Frame | None = None
