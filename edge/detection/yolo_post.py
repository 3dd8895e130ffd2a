"""Ultralytics' pre- and post-processing for YOLOv8-layout networks, in numpy and OpenCV.

Why a copy of theirs: the detections must be the ones ``YOLO(...).predict`` gives (the golden
test compares them), without importing torch. So:

* letterbox exactly like ``ultralytics.data.augment.LetterBox`` for fixed-shape models
  (``auto=False``): one scale for both axes, sides rounded, padding 114 split around the image
  with the same ``round(d -/+ 0.1)`` rule, cv2 bilinear resize; BGR to RGB; ``/ 255`` in float32;
* ``non_max_suppression``: candidates whose best class score is ``> conf``, best class only, the
  class filter applied after the argmax (a box that is mostly "bicycle" is not a person),
  class-offset greedy NMS suppressing IoU ``> nms``, at most 300 boxes;
* ``scale_boxes``: remove the padding, divide by the per-axis gain the rounding produced, clip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.detection.base import Image

FloatArray = npt.NDArray[np.float64]

PAD_VALUE = 114  # Ultralytics' letterbox grey
MAX_DET = 300  # Ultralytics' default max_det
MAX_NMS = 30000  # boxes kept for NMS, by score (Ultralytics' max_nms)
MAX_WH = 7680.0  # class offset for per-class NMS in one pass (Ultralytics' max_wh)


@dataclass(frozen=True)
class Letterbox:
    """Where the source image lies in the network input: to map boxes back."""

    gain_x: float
    gain_y: float
    pad_x: int
    pad_y: int


def letterbox(image: Image, size: tuple[int, int]) -> tuple[Image, Letterbox]:
    """Resize keeping the aspect ratio and pad to ``size`` (w, h), as Ultralytics does.

    The returned geometry follows ``ultralytics.utils.ops.scale_boxes``: the per-axis gain is the
    rounded new side over the old one, which is what maps boxes back exactly.
    """
    net_w, net_h = size
    h, w = image.shape[:2]
    r = min(net_h / h, net_w / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = (net_w - new_w) / 2, (net_h - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    out: Image = image
    if (w, h) != (new_w, new_h):
        out = np.asarray(cv2.resize(out, (new_w, new_h), interpolation=cv2.INTER_LINEAR))
    if top or bottom or left or right:
        out = np.asarray(cv2.copyMakeBorder(out, top, bottom, left, right, cv2.BORDER_CONSTANT,
                                            value=(PAD_VALUE, PAD_VALUE, PAD_VALUE)))
    return out, Letterbox(new_w / w, new_h / h, left, top)


def to_tensor(image: Image) -> npt.NDArray[np.float32]:
    """BGR uint8 HWC to RGB float32 (1, 3, H, W) in 0..1, divided like ``div_(255)``."""
    chw = np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))
    return (chw.astype(np.float32) / np.float32(255.0))[None]


def nms(boxes: npt.NDArray[np.floating[Any]], scores: npt.NDArray[np.floating[Any]],
        iou: float) -> npt.NDArray[np.int64]:
    """Greedy NMS (torchvision's rule: drop boxes with IoU > ``iou`` to a kept, higher box).

    Arithmetic stays in the boxes' dtype (float32 from the network, as torchvision computes).
    """
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            overlap = np.where(union > 0, inter / union, 0.0)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def postprocess(output: npt.NDArray[np.float32], *, conf: float, iou: float,
                classes: npt.NDArray[np.int64] | None, box: Letterbox,
                frame_size: tuple[int, int],
                max_det: int = MAX_DET) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64]]:
    """Raw ``(1, 4 + nc, N)`` output to xyxy boxes in source pixels, scores and class ids."""
    pred = output[0]
    cls_scores = pred[4:]
    best = cls_scores.max(axis=0)
    cand = np.flatnonzero(best > conf)
    if cand.size == 0:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64)
    class_ids = cls_scores[:, cand].argmax(axis=0).astype(np.int64)
    scores = best[cand].astype(np.float64)
    if classes is not None:
        keep = np.isin(class_ids, classes)
        cand, class_ids, scores = cand[keep], class_ids[keep], scores[keep]
    if cand.size > MAX_NMS:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS]
        cand, class_ids, scores = cand[top], class_ids[top], scores[top]
    cx, cy, bw, bh = pred[:4, cand].astype(np.float32)
    # xywh2xyxy in float32, as Ultralytics does on the float32 output
    half_w, half_h = bw / np.float32(2), bh / np.float32(2)
    xyxy = np.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), axis=1)
    offset = (class_ids * np.float32(MAX_WH)).astype(np.float32)[:, None]
    kept = nms(xyxy + offset, scores.astype(np.float32), iou)[:max_det]
    # scale_boxes and clip_boxes, in float32 like Ultralytics, then float64 for Detections
    out = xyxy[kept]
    out[:, [0, 2]] = (out[:, [0, 2]] - np.float32(box.pad_x)) / np.float32(box.gain_x)
    out[:, [1, 3]] = (out[:, [1, 3]] - np.float32(box.pad_y)) / np.float32(box.gain_y)
    w, h = frame_size
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out.astype(np.float64), scores[kept], class_ids[kept]
