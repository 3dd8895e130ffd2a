"""Annotated evidence video: fences, tripwires, tracked people, and the alarms in force.

Written to a hidden temporary file beside the target and renamed on success, so an aborted
replay never leaves a truncated video that looks like a finished one.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge.sources.file import SourceError
from zones.alarm import Alarm, AlarmState
from zones.engine import CameraRules
from zones.geometry import ZoneKind
from zones.tracks import Detections

_ZONE_BGR = {ZoneKind.CLIFF: (0, 90, 255), ZoneKind.WATER: (255, 140, 0),
             ZoneKind.CROWD: (0, 200, 255), ZoneKind.RESTRICTED: (200, 0, 200)}
_ALARM_BGR = (0, 0, 255)
_OK_BGR = (0, 200, 0)


class Annotator:
    """Draws one frame at a time into an MP4 writer."""

    def __init__(self, out: Path, fps: float, size: tuple[int, int], rules: CameraRules):
        self.out = out
        self.tmp = out.with_name(f".{out.stem}.partial{out.suffix or '.mp4'}")
        out.parent.mkdir(parents=True, exist_ok=True)
        fourcc = cv2.VideoWriter.fourcc(*"mp4v")
        self.writer = cv2.VideoWriter(str(self.tmp), fourcc, fps, size)
        if not self.writer.isOpened():
            raise SourceError(f"{out}: cannot open video writer")
        self.rules = rules
        self.active: dict[str, Alarm] = {}  # alarm id -> raised event still in force

    def draw(self, image: npt.NDArray[np.uint8], tracks: Detections | None,
             events: list[Alarm]) -> None:
        for ev in events:
            if ev.state is AlarmState.RAISED and ev.kind.value != "line_crossing":
                self.active[ev.id] = ev
            else:
                self.active.pop(ev.id, None)
        img = image.copy()
        overlay = img.copy()
        for z in self.rules.zones:
            pts = np.asarray(z.fence.points, dtype=np.int32)
            colour = _ZONE_BGR[z.fence.kind]
            cv2.fillPoly(overlay, [pts], colour)
            cv2.polylines(img, [pts], True, colour, 2)
            x, y = pts.min(axis=0)
            cv2.putText(img, f"{z.fence.id} ({z.fence.kind.value}, {z.fence.risk.value})",
                        (int(x) + 4, int(y) + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)
        cv2.addWeighted(overlay, 0.2, img, 0.8, 0, dst=img)
        alarmed = {tid for a in self.active.values() for tid in a.track_ids}
        if tracks is not None:
            for box, tid in zip(tracks.boxes, tracks.track_ids.tolist(), strict=True):
                x1, y1, x2, y2 = (int(v) for v in box)
                colour = _ALARM_BGR if tid in alarmed else _OK_BGR
                cv2.rectangle(img, (x1, y1), (x2, y2), colour, 2)
                cv2.circle(img, ((x1 + x2) // 2, y2), 3, colour, -1)
                cv2.putText(img, str(tid), (x1, max(12, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX,
                            0.45, colour, 1)
        for i, a in enumerate(list(self.active.values())[:6]):
            cv2.putText(img, f"ALARM {a.kind.value} {a.zone} {a.track_ids}", (8, 22 + 20 * i),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.55, _ALARM_BGR, 2)
        self.writer.write(img)

    def finish(self) -> None:
        self.writer.release()
        self.tmp.replace(self.out)

    def abort(self) -> None:
        self.writer.release()
        self.tmp.unlink(missing_ok=True)
