"""Scores one zone set's alarms against the reference (``benchmarks/reference.py``).

A raised system alarm matches an expected event when zone, kind and tripwire agree, it was
raised inside the event's window, and its box overlaps the ground-truth person's box at that
frame (IoU >= ``MIN_IOU``, the replay benchmark's rule). Each alarm and each event match at
most once, greedily by smallest delay, required events first; an alarm that matches only a
"don't care" event, or whose box is on a person the ground truth says to ignore at that frame
(MOT ``conf = 0``), is neither a hit nor a false alarm. Every false alarm gets a cause:

* ``repeat``: a second alarm for an entry (or crossing) already alarmed: the double alarms
  this evaluation exists to catch (a foot hovering on an edge, an identity switch);
* ``outside``: the person is there, but by the ground truth not inside the zone (or not
  crossing) then: the box's foot point differs from the annotation near an edge;
* ``no person``: no ground-truth person under the alarm's box (a false detection).

Delay: raising frame minus the expected event's frame (negative when raised early).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from benchmarks.reference import Expected, Track
from benchmarks.scoring import iou
from zones.alarm import Alarm, AlarmKind, AlarmState

MIN_IOU = 0.3
SCORED = (AlarmKind.INTRUSION, AlarmKind.LINE_CROSSING)


@dataclass
class SetScore:
    """Precision, recall and delays of one zone set (intrusions and crossings together)."""

    seed: int
    required: int = 0
    raised: int = 0  # system alarms, less those that matched a don't-care event
    matched: int = 0
    delays: list[int] = field(default_factory=list)
    false_causes: list[str] = field(default_factory=list)
    false_alarms: list[Alarm] = field(default_factory=list)
    missed: list[Expected] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.matched / self.raised if self.raised else 1.0

    @property
    def recall(self) -> float:
        return self.matched / self.required if self.required else 1.0

    @property
    def median_delay(self) -> float:
        return float(np.median(self.delays)) if self.delays else float("nan")


def _overlap(a: Alarm, e: Expected, tracks: dict[int, Track]) -> bool:
    if not a.evidence.boxes:
        return False
    gt = tracks[e.track].box_near(a.frame)
    return gt is not None and iou(np.asarray(a.evidence.boxes[0]), gt) >= MIN_IOU


def _fits(a: Alarm, e: Expected) -> bool:
    return (a.zone == e.zone and a.kind.value == e.kind and a.evidence.line == e.line
            and e.first <= a.frame <= e.last)


def _greedy(alarms: list[Alarm], events: list[Expected], tracks: dict[int, Track],
            free: set[int]) -> list[tuple[int, int]]:
    pairs = sorted((abs(a.frame - e.frame), ai, ei)
                   for ai, a in enumerate(alarms) if ai in free
                   for ei, e in enumerate(events) if _fits(a, e) and _overlap(a, e, tracks))
    used_e: set[int] = set()
    out: list[tuple[int, int]] = []
    for _, ai, ei in pairs:
        if ai in free and ei not in used_e:
            free.discard(ai)
            used_e.add(ei)
            out.append((ai, ei))
    return out


def _cause(a: Alarm, expected: list[Expected], tracks: dict[int, Track]) -> str:
    if any(_fits(a, e) and _overlap(a, e, tracks) for e in expected):
        return "repeat"
    box = np.asarray(a.evidence.boxes[0]) if a.evidence.boxes else None
    for tr in tracks.values():
        gt = tr.box_near(a.frame, search=0)
        if box is not None and gt is not None and iou(box, gt) >= MIN_IOU:
            return "outside"
    return "no person"


def _on_hidden(a: Alarm, tracks: dict[int, Track]) -> bool:
    """The alarm's box is on a person the ground truth says to ignore at that frame."""
    if not a.evidence.boxes:
        return False
    box = np.asarray(a.evidence.boxes[0])
    for tr in tracks.values():
        i = np.flatnonzero(tr.frames == a.frame)
        if len(i) and not tr.counted[i[0]] and iou(box, tr.boxes[i[0]]) >= MIN_IOU:
            return True
    return False


def score_set(seed: int, alarms: list[Alarm], expected: list[Expected],
              tracks: dict[int, Track]) -> SetScore:
    """Score the raised intrusion and line-crossing alarms of one zone set."""
    raised = [a for a in alarms if a.state is AlarmState.RAISED and a.kind in SCORED]
    required = [e for e in expected if e.required]
    optional = [e for e in expected if not e.required]
    free = set(range(len(raised)))
    hits = _greedy(raised, required, tracks, free)
    allowed = _greedy(raised, optional, tracks, free)
    ignored = {ai for ai in free if _on_hidden(raised[ai], tracks)}
    free -= ignored
    result = SetScore(seed, required=len(required),
                      raised=len(raised) - len(allowed) - len(ignored),
                      matched=len(hits))
    result.delays = [raised[ai].frame - required[ei].frame for ai, ei in hits]
    hit_e = {ei for _, ei in hits}
    result.missed = [e for i, e in enumerate(required) if i not in hit_e]
    result.false_alarms = [raised[ai] for ai in sorted(free)]
    result.false_causes = [_cause(a, expected, tracks) for a in result.false_alarms]
    return result
