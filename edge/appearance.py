"""A cheap appearance cue per person: colour histograms of the upper and lower body.

When a track breaks (occlusion, an identity switch in a crowd) the rules must tell the person
who was lost from a passer-by who appears near the same spot (``zones/handover.py``). Clothing
colour does that for a few seconds at almost no cost: each box is cut to its central strip
(the background at the sides and the head are left out), split into upper and lower body, and
each half's pixels binned by hue, saturation and value (``BINS``), L1-normalised. Dark and
grey clothes have no reliable hue, so value and saturation carry them. About 20-40
microseconds per person at PETS09's sizes: the frame step computes it only when a rule asks.
"""

from __future__ import annotations

import cv2
import numpy as np

from zones.tracks import FloatArray

BINS = (8, 3, 3)  # hue, saturation, value
DIM = 2 * BINS[0] * BINS[1] * BINS[2]
_RANGES = [0, 180, 0, 256, 0, 256]


def _hist(hsv: np.ndarray) -> np.ndarray:
    if hsv.size == 0:
        return np.zeros(DIM // 2)
    h = cv2.calcHist([hsv], [0, 1, 2], None, list(BINS), _RANGES).reshape(-1)
    total = float(h.sum())
    return np.asarray(h / total if total > 0 else h, dtype=np.float64)


def appearance(image: np.ndarray, boxes: FloatArray) -> FloatArray:
    """``(N, DIM)`` histograms (upper body, then lower) of ``(N, 4)`` boxes in ``image``."""
    out = np.zeros((len(boxes), DIM))
    if len(boxes) == 0 or image.ndim != 3:
        return out
    h, w = image.shape[:2]
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        bw, bh = x2 - x1, y2 - y1
        xa, xb = int(max(0, x1 + 0.25 * bw)), int(min(w, x2 - 0.25 * bw))
        ya, ym, yb = (int(max(0, y1 + 0.15 * bh)), int(min(h, max(0, y1 + 0.5 * bh))),
                      int(min(h, y2 - 0.05 * bh)))
        if xb - xa < 2 or yb - ya < 4:
            continue
        hsv = cv2.cvtColor(np.ascontiguousarray(image[ya:yb, xa:xb]), cv2.COLOR_BGR2HSV)
        split = max(0, ym - ya)
        out[i, :DIM // 2] = _hist(hsv[:split])
        out[i, DIM // 2:] = _hist(hsv[split:])
    return out
