"""Multi-object tracking with ByteTrack (Roboflow ``trackers``), and frames without detection.

A maintained tracker rather than our own: identities are what make "one alarm per person per
entry" possible. On detection frames it is stepped with the detections (frames where the
detector found nobody too, so lost tracks age in frame time and die on schedule); timestamps
drive its motion model, so skipped frames are handled.

``StridedTracker``: with ``detect_every = k`` (live cameras) the detector runs on one frame in
k and ByteTrack is stepped only with those frames. Stepping it with empty detections in
between would be wrong, not just wasteful: the library ages every track as a miss, drops a
young track at its first miss (so no new person would ever be confirmed) and outputs only
tracks matched in that very frame (so rules would see everyone vanish and clear). Frames in
between step the rules on *predicted* tracks instead: each confirmed track moves on at the
velocity of its last two observations (the constant-velocity model ByteTrack's own Kalman
filter uses), for at most ``max_extrapolate_s``. Rules therefore step on every processed
frame, on frame time: dwell, ``intrusion_seconds`` and crowd hold clocks run, a track that
walks in between detections is seen inside without waiting for the next detection, and people
never blink out. Frame-count thresholds (``intrusion_frames``) then count processed frames, of
which only one in k is an observation: a site that runs ``detect_every > 1`` should express
confirmation in seconds. A track still needs ``tracker.min_hits`` real detections before it
has an id at all. With a detection on every frame (replays), ``StridedTracker.update`` returns
exactly what ByteTrack returns.
"""

from __future__ import annotations

import warnings

import numpy as np
import supervision as sv

from edge.config import TrackerConfig
from zones.tracks import Detections, FloatArray


class ByteTracker:
    """Wraps ``trackers.ByteTrackTracker`` in the pipeline's ``Detections`` model."""

    def __init__(self, cfg: TrackerConfig, fps: float):
        from trackers import ByteTrackTracker

        # The library counts its lost buffer in 30 fps frames whatever the stream's rate.
        self._tracker = ByteTrackTracker(
            lost_track_buffer=max(1, round(cfg.lost_seconds * 30)),
            frame_rate=fps,
            track_activation_threshold=cfg.activation,
            minimum_consecutive_frames=cfg.min_hits,
            minimum_iou_threshold=cfg.min_iou,
            high_conf_det_threshold=cfg.high_conf,
        )

    def update(self, dets: Detections) -> Detections:
        """Detections of one frame in, the same frame's tracked people out (ids >= 1)."""
        sv_dets = sv.Detections(
            xyxy=dets.boxes.astype(np.float32).reshape(-1, 4),
            confidence=dets.scores.astype(np.float32),
            class_id=dets.class_ids.astype(int),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = self._tracker.update(sv_dets, timestamp=dets.time)
        ids = (np.asarray(out.tracker_id, dtype=np.int64) if out.tracker_id is not None
               else np.full(len(out), -1, dtype=np.int64))
        scores = (np.asarray(out.confidence, dtype=np.float64) if out.confidence is not None
                  else np.ones(len(out)))
        class_ids = (np.asarray(out.class_id, dtype=np.int64) if out.class_id is not None
                     else np.zeros(len(out), dtype=np.int64))
        w, h = dets.frame_size
        boxes = np.asarray(out.xyxy, dtype=np.float64).reshape(-1, 4)
        if w and h:
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        return dets.with_tracks(boxes, scores, class_ids, ids).tracked


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
