"""Scoring alarms against the alarms the ground truth implies.

A system alarm matches an expected one when both name the same zone and kind (and tripwire),
the system alarm was raised within the expected episode (from ``early`` frames before the
ground-truth entry to the ground-truth exit; line crossings within ``window`` frames), and the
person it names overlaps that ground-truth person (IoU of boxes at the raising frame). Each
alarm matches at most once, greedily by smallest delay. Delay = raising frame minus the
ground-truth entry frame (the first frame the foot point was inside).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from benchmarks.groundtruth import box_at
from zones.alarm import Alarm, AlarmKind, AlarmState
from zones.tracks import Detections


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class RuleScore:
    kind: str
    expected: int = 0
    raised: int = 0
    matched: int = 0
    delays: list[int] = field(default_factory=list)
    false_alarms: list[Alarm] = field(default_factory=list)
    missed: list[Alarm] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.matched / self.raised if self.raised else float("nan")

    @property
    def recall(self) -> float:
        return self.matched / self.expected if self.expected else float("nan")

    def delay(self, q: float) -> float:
        return float(np.percentile(self.delays, q)) if self.delays else float("nan")


def _episodes(expected: list[Alarm], last_frame: int) -> list[tuple[Alarm, int]]:
    """Raised expected alarms with the frame their episode ended."""
    ends = {a.id: a.frame for a in expected if a.state is AlarmState.CLEARED}
    return [(a, ends.get(a.id, last_frame)) for a in expected if a.state is AlarmState.RAISED]


def score(kind: AlarmKind, system: list[Alarm], expected: list[Alarm],
          gt_frames: list[Detections], *, early: int = 5, window: int = 10,
          min_iou: float = 0.3) -> RuleScore:
    """Precision, recall and delays of one rule kind."""
    sys_raised = [a for a in system if a.kind is kind and a.state is AlarmState.RAISED]
    exp = [(a, end) for a, end in _episodes(expected, len(gt_frames)) if a.kind is kind]
    result = RuleScore(kind.value, expected=len(exp), raised=len(sys_raised))
    pairs: list[tuple[int, int, int]] = []  # (|delay|, system index, expected index)
    for si, s in enumerate(sys_raised):
        for ei, (e, end) in enumerate(exp):
            if s.zone != e.zone or s.evidence.line != e.evidence.line:
                continue
            if kind is AlarmKind.LINE_CROSSING:
                if abs(s.frame - e.frame) > window:
                    continue
            elif not e.first_frame - early <= s.frame <= end:
                continue
            if not _same_people(s, e, gt_frames, min_iou):
                continue
            pairs.append((abs(s.frame - e.first_frame), si, ei))
    used_s: set[int] = set()
    used_e: set[int] = set()
    for _, si, ei in sorted(pairs):
        if si in used_s or ei in used_e:
            continue
        used_s.add(si)
        used_e.add(ei)
        result.delays.append(sys_raised[si].frame - exp[ei][0].first_frame)
    result.matched = len(used_e)
    result.false_alarms = [a for i, a in enumerate(sys_raised) if i not in used_s]
    result.missed = [e for i, (e, _) in enumerate(exp) if i not in used_e]
    return result


def _same_people(s: Alarm, e: Alarm, gt_frames: list[Detections], min_iou: float) -> bool:
    """Per-track alarms: the system's box overlaps the GT person's box at the raising frame.
    Zone-level alarms (crowd) match on zone and time alone."""
    if e.track_id is None or not s.evidence.boxes:
        return True
    gt_box = box_at(gt_frames, e.track_id, s.frame)
    if gt_box is None:
        return False
    return iou(np.asarray(s.evidence.boxes[0]), gt_box) >= min_iou
