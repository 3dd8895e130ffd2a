"""Small, far-away people: extra detection passes on tiles or on moving regions.

A person 200 m from the camera is a few pixels tall after the network's resize. ``tiles`` runs
the detector on a grid of overlapping crops as well as the whole frame (costs grid+1 passes);
``motion`` runs it only on crops around regions a background model says are moving (costs one
extra pass per motion cluster, none on a still scene). Results are merged by NMS.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.config import TilingConfig
from edge.detection.base import Detector, Image
from zones.tracks import Detections

Box = tuple[int, int, int, int]


def merge(parts: list[Detections], nms: float, size: tuple[int, int]) -> Detections:
    """Union of detections from several passes, duplicates removed by class-agnostic NMS."""
    boxes = np.concatenate([p.boxes for p in parts]) if parts else np.zeros((0, 4))
    scores = np.concatenate([p.scores for p in parts]) if parts else np.zeros(0)
    classes = np.concatenate([p.class_ids for p in parts]) if parts else np.zeros(0, np.int64)
    if len(boxes) == 0:
        return Detections.empty(frame_size=size)
    xywh = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes]
    keep = np.asarray(cv2.dnn.NMSBoxes(xywh, scores.tolist(), 0.0, nms), dtype=np.int64)
    keep = keep.reshape(-1)
    return Detections.create(boxes[keep], scores[keep], classes[keep], frame_size=size)


def _crop_detect(base: Detector, image: Image, box: Box) -> Detections:
    x1, y1, x2, y2 = box
    d = base.detect(np.ascontiguousarray(image[y1:y2, x1:x2]))
    shifted = d.boxes + np.array([x1, y1, x1, y1], dtype=np.float64)
    return Detections.create(shifted, d.scores, d.class_ids)


def tile_boxes(size: tuple[int, int], grid: tuple[int, int], overlap: float) -> list[Box]:
    """Overlapping crops covering the frame, ``grid`` = (across, down)."""
    w, h = size
    nx, ny = grid
    tw, th = w / (nx - overlap * (nx - 1)), h / (ny - overlap * (ny - 1))
    out = []
    for j in range(ny):
        for i in range(nx):
            x1, y1 = int(i * tw * (1 - overlap)), int(j * th * (1 - overlap))
            out.append((x1, y1, min(w, int(x1 + tw)), min(h, int(y1 + th))))
    return out


class TiledDetector:
    """The whole frame plus each tile."""

    def __init__(self, base: Detector, grid: tuple[int, int], overlap: float, nms: float):
        self.base, self.grid, self.overlap, self.nms = base, grid, overlap, nms
        self.name = f"{base.name}+tiles{grid[0]}x{grid[1]}"

    def detect(self, image: Image) -> Detections:
        h, w = image.shape[:2]
        parts = [self.base.detect(image)]
        parts += [_crop_detect(self.base, image, b)
                  for b in tile_boxes((w, h), self.grid, self.overlap)]
        return merge(parts, self.nms, (w, h))


class MotionDetector:
    """The whole frame plus crops around moving regions (MOG2 background model)."""

    def __init__(self, base: Detector, min_area: int, nms: float, crop: int = 256,
                 max_crops: int = 4, max_height: int = 96):
        self.base, self.min_area, self.nms = base, min_area, nms
        self.crop, self.max_crops, self.max_height = crop, max_crops, max_height
        self.bg = cv2.createBackgroundSubtractorMOG2(history=200, detectShadows=False)
        self.name = f"{base.name}+motion"
        self.crops_run = 0

    def regions(self, image: Image) -> list[Box]:
        """Crops of ``crop`` px centred on moving blobs small enough to need one (taller
        than ``max_height`` px, the full-frame pass sees them), largest first."""
        h, w = image.shape[:2]
        small = cv2.resize(image, (w // 2, h // 2))
        mask = self.bg.apply(small)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        mask = cv2.dilate(mask, np.ones((9, 9), np.uint8))
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        blobs = sorted((r for r in map(cv2.boundingRect, contours)
                        if r[2] * r[3] * 4 >= self.min_area and r[3] * 2 <= self.max_height),
                       key=lambda r: -r[2] * r[3])
        out: list[Box] = []
        for bx, by, bw, bh in blobs:
            cx, cy = (bx + bw / 2) * 2, (by + bh / 2) * 2
            side = self.crop
            x1 = int(min(max(0, cx - side / 2), max(0, w - side)))
            y1 = int(min(max(0, cy - side / 2), max(0, h - side)))
            box = (x1, y1, min(w, x1 + side), min(h, y1 + side))
            if not any(_covers(o, box, margin=side // 4) for o in out):
                out.append(box)
            if len(out) >= self.max_crops:
                break
        return out

    def detect(self, image: Image) -> Detections:
        h, w = image.shape[:2]
        parts = [self.base.detect(image)]
        crops = self.regions(image)
        self.crops_run += len(crops)
        parts += [_crop_detect(self.base, image, b) for b in crops]
        return merge(parts, self.nms, (w, h))


def _covers(outer: Box, inner: Box, margin: int = 0) -> bool:
    """Whether ``outer`` contains ``inner`` shrunk by ``margin`` (the blob at its centre)."""
    return (outer[0] <= inner[0] + margin and outer[1] <= inner[1] + margin
            and outer[2] >= inner[2] - margin and outer[3] >= inner[3] - margin)


def wrap_detector(base: Detector, cfg: TilingConfig, nms: float) -> Detector:
    """The configured small-target strategy around a base detector."""
    if cfg.mode == "tiles":
        return TiledDetector(base, cfg.grid, cfg.overlap, nms)
    if cfg.mode == "motion":
        return MotionDetector(base, cfg.min_area, nms)
    return base


__all__ = ["MotionDetector", "TiledDetector", "merge", "tile_boxes", "wrap_detector"]
