"""Multi-object tracking with ByteTrack (Roboflow ``trackers``), stepped on every frame.

A maintained tracker rather than our own: identities are what make "one alarm per person per
entry" possible. It is stepped on frames with no detections too, so lost tracks age in frame
time and die on schedule; timestamps drive its motion model, so skipped frames are handled.
"""

from __future__ import annotations

import warnings

import numpy as np
import supervision as sv

from edge.config import TrackerConfig
from zones.tracks import Detections


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
