"""Per-frame detection scoring: detections matched to ground-truth people, one to one.

Used by the night and small-target benchmarks, which score frames (not alarms): detections
are taken by score, highest first, each matched to the unmatched person it overlaps most at
IoU >= ``thr`` (the PASCAL VOC rule); a detection left over that lies on an "ignore" region of
the ground truth (MOTChallenge's non-counted people, reflections...) is neither right nor
wrong; the rest are false. Recall is kept per person, so it can be split by height.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Boxes = npt.NDArray[np.float64]


def iou_matrix(a: Boxes, b: Boxes) -> Boxes:
    """IoU of every box in ``a`` with every box in ``b`` (x1, y1, x2, y2)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod((rb - lt).clip(0), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


@dataclass
class Tally:
    """Sums over frames; ``found``/``heights`` per ground-truth person, for recall by size."""

    tp: int = 0
    fp: int = 0
    heights: list[float] = field(default_factory=list)
    found: list[bool] = field(default_factory=list)

    @property
    def people(self) -> int:
        return len(self.found)

    @property
    def recall(self) -> float:
        return sum(self.found) / max(self.people, 1)

    @property
    def precision(self) -> float:
        return self.tp / max(self.tp + self.fp, 1)

    def recall_between(self, low: float, high: float) -> tuple[float | None, int]:
        """Recall of people ``low <= height < high`` px, and how many there are."""
        h = np.asarray(self.heights)
        sel = (h >= low) & (h < high)
        n = int(sel.sum())
        return (float(np.asarray(self.found)[sel].mean()) if n else None), n

    def add(self, boxes: Boxes, scores: npt.NDArray[np.float64], people: Boxes,
            ignore: Boxes | None = None, thr: float = 0.5) -> None:
        """Score one frame's detections against its people (and ignore regions)."""
        order = np.argsort(-scores, kind="stable")
        ious = iou_matrix(boxes[order], people)
        taken = np.zeros(len(people), dtype=bool)
        unmatched = []
        for k in range(len(order)):
            cand = np.where(taken, -1.0, ious[k]) if len(people) else np.zeros(0)
            j = int(cand.argmax()) if len(cand) else -1
            if j >= 0 and cand[j] >= thr:
                taken[j] = True
                self.tp += 1
            else:
                unmatched.append(order[k])
        if unmatched and ignore is not None and len(ignore):
            on_ignore = iou_matrix(boxes[unmatched], ignore).max(axis=1) >= thr
            self.fp += int((~on_ignore).sum())
        else:
            self.fp += len(unmatched)
        self.heights += list(people[:, 3] - people[:, 1])
        self.found += taken.tolist()
