"""Far-off people near the fences: the whole frame, plus magnified slices around each fence.

Why only there: a person 20 px tall at a far waterline is a few pixels after the network's
resize of a 1920x1080 frame, and running the network on the whole frame in magnified slices
costs tens of passes. Only the neighbourhood of the fences needs the fine look, so each fence's
bounding box (grown by ``margin`` px, twice that above: a person standing on the fence's far
edge stands up out of it) is covered by overlapping crops of ``input_size / zoom`` px, each
magnified ``zoom`` times into the detector's own network (one model in memory; the cost per
pixel covered is the same for any crop size). Overlapping regions of several fences are merged
first, so no place is sliced twice.

Merged across slice borders: a detection touching a slice's inner edge (not the frame's) is
a person cut by that edge; the overlap (at least the tallest person slices are for) shows them
whole in a neighbouring slice, so the cut box is dropped. What remains of every slice and of
the whole-frame pass is merged by class-agnostic NMS. Costs (``benchmarks/small_targets.py``):
one whole-frame pass plus one small pass per slice, fixed per camera and logged at start.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from edge.detection.base import Detector, Image
from edge.detection.tiling import Box, merge
from zones.tracks import Detections

log = logging.getLogger(__name__)
EDGE_PX = 2.0  # a box this close to a slice's inner edge was cut by it


def _grown(points: Sequence[Sequence[float]], margin: int, size: tuple[int, int]) -> Box:
    """A fence's bounding box grown by ``margin`` px, by twice that above, within the frame."""
    xy = np.asarray(points, dtype=np.float64)
    w, h = size
    return (max(0, math.floor(xy[:, 0].min()) - margin),
            max(0, math.floor(xy[:, 1].min()) - 2 * margin),
            min(w, math.ceil(xy[:, 0].max()) + margin),
            min(h, math.ceil(xy[:, 1].max()) + margin))


def _union(boxes: list[Box]) -> list[Box]:
    """Overlapping rectangles merged into their bounding rectangles, until none overlap."""
    out = list(boxes)
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    out[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    return out


def _starts(lo: int, hi: int, length: int, stride: float) -> list[int]:
    """Slice origins covering [lo, hi) with slices of ``length`` no more than ``stride`` apart."""
    if hi - lo <= length:
        return [lo]
    n = math.ceil((hi - lo - length) / stride) + 1
    return [round(lo + k * (hi - lo - length) / (n - 1)) for k in range(n)]


def plan_slices(fences: Sequence[Sequence[Sequence[float]]], size: tuple[int, int],
                crop: tuple[int, int], overlap: float, margin: int) -> list[Box]:
    """Crops of ``crop`` (w, h) px covering every fence's neighbourhood, overlapping by at
    least ``overlap`` of a crop, each inside the frame."""
    w, h = size
    cw, ch = min(crop[0], w), min(crop[1], h)
    out: list[Box] = []
    for x1, y1, x2, y2 in _union([_grown(f, margin, size) for f in fences]):
        if x2 - x1 < cw:  # a region narrower than a crop: centre the crop on it
            x1 = max(0, min(w - cw, (x1 + x2 - cw) // 2))
            x2 = x1 + cw
        if y2 - y1 < ch:
            y1 = max(0, min(h - ch, (y1 + y2 - ch) // 2))
            y2 = y1 + ch
        for ty in _starts(y1, y2, ch, ch * (1 - overlap)):
            out += [(tx, ty, tx + cw, ty + ch)
                    for tx in _starts(x1, x2, cw, cw * (1 - overlap))]
    return out


def _uncut(d: Detections, box: Box, size: tuple[int, int]) -> Detections:
    """A slice's detections in frame pixels, without those its inner edges cut."""
    x1, y1, x2, y2 = box
    b = d.boxes + np.array([x1, y1, x1, y1], dtype=np.float64)
    w, h = size
    cut = (((b[:, 0] <= x1 + EDGE_PX) & (x1 > 0)) | ((b[:, 1] <= y1 + EDGE_PX) & (y1 > 0))
           | ((b[:, 2] >= x2 - EDGE_PX) & (x2 < w)) | ((b[:, 3] >= y2 - EDGE_PX) & (y2 < h)))
    keep = ~cut
    return Detections.create(b[keep], d.scores[keep], d.class_ids[keep])


class FenceSlicer:
    """The whole frame, and each fence slice magnified ``zoom`` times, through ``base`` (whose
    network input is ``input_size``: a slice is ``input_size / zoom`` px of the frame). The
    slices are planned on the first frame, whose size the camera keeps."""

    def __init__(self, base: Detector, fences: Sequence[Sequence[Sequence[float]]], *,
                 input_size: tuple[int, int], zoom: float, overlap: float, margin: int,
                 nms: float, camera: str = ""):
        self.base, self.fences, self.nms, self.camera = base, fences, nms, camera
        self.crop = (round(input_size[0] / zoom), round(input_size[1] / zoom))
        self.zoom, self.overlap, self.margin = zoom, overlap, margin
        self.name = f"{base.name}+fences"
        self.slices: list[Box] | None = None

    def plan(self, size: tuple[int, int]) -> list[Box]:
        if self.slices is None:
            self.slices = plan_slices(self.fences, size, self.crop, self.overlap, self.margin)
            log.info("camera %s: %d fence slices of %dx%d px, magnified %.3gx", self.camera,
                     len(self.slices), *self.crop, self.zoom)
        return self.slices

    def detect(self, image: Image) -> Detections:
        h, w = image.shape[:2]
        parts = [self.base.detect(image)]
        for box in self.plan((w, h)):
            x1, y1, x2, y2 = box
            crop = np.ascontiguousarray(image[y1:y2, x1:x2])
            parts.append(_uncut(self.base.detect(crop), box, (w, h)))
        return merge(parts, self.nms, (w, h))
