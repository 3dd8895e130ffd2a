"""Evidence snapshots: a JPEG of the frame that raised an alarm, for the operator to judge it.

An operator deciding whether to send a ranger at night wants to see what the camera saw, not
only a box's coordinates. When an alarm is raised the worker hands the frame (the main
stream's newest frame when ``evidence_source`` is set and fresh, else the frame the detector
saw) and the alarm's boxes to ``SnapshotWriter.request``, which names the file at once (the
name goes into the alarm's evidence, so the alarm is not delayed) and encodes and writes it
on its own thread. The queue is bounded: when the disk or the CPU cannot keep up, snapshots
are dropped and counted, alarms never wait.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import numpy.typing as npt

from edge.config import CameraConfig
from edge.livesource import CameraState, LiveSource
from edge.source import Frame
from zones.alarm import Alarm

if TYPE_CHECKING:
    from edge.live import LiveCamera

log = logging.getLogger(__name__)

BOX_COLOUR = (0, 0, 255)  # BGR red


@dataclass(frozen=True)
class _Job:
    path: Path
    image: npt.NDArray[np.uint8]
    boxes: list[tuple[float, float, float, float]]
    scale: tuple[float, float]


class SnapshotWriter:
    """Writes ``{dir}/{camera}/{alarm id}.jpg`` in the background."""

    def __init__(self, directory: Path, *, quality: int = 85, max_queue: int = 16):
        self.directory = directory
        self.quality = quality
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._loop, name="snapshots", daemon=True)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then end the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def request(self, alarm: Alarm, image: npt.NDArray[np.uint8],
                detected_size: tuple[int, int]) -> str | None:
        """Queue a snapshot of ``image`` with the alarm's boxes (given in pixels of a frame
        of ``detected_size``, w x h); the file name relative to the directory, or None when
        the queue is full (dropped, counted)."""
        name = f"{alarm.camera}/{alarm.id}.jpg"
        h, w = image.shape[:2]
        dw, dh = detected_size
        scale = (w / dw if dw else 1.0, h / dh if dh else 1.0)
        try:
            self._queue.put_nowait(_Job(self.directory / name, image,
                                        list(alarm.evidence.boxes), scale))
        except queue.Full:
            self.dropped += 1
            log.warning("snapshot dropped: writer behind", extra={"alarm": alarm.id})
            return None
        return name

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._write(job)
                self.written += 1
            except (OSError, cv2.error) as exc:
                self.failed += 1
                log.error("snapshot not written", extra={"path": str(job.path),
                                                         "error": str(exc)})

    def _write(self, job: _Job) -> None:
        img = job.image.copy()
        sx, sy = job.scale
        for x1, y1, x2, y2 in job.boxes:
            cv2.rectangle(img, (round(x1 * sx), round(y1 * sy)), (round(x2 * sx), round(y2 * sy)),
                          BOX_COLOUR, 2)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise OSError("JPEG encoding failed")
        job.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = job.path.with_suffix(".part")
        tmp.write_bytes(buf.tobytes())
        tmp.replace(job.path)  # readers never see half a file


def evidence_stream(cam: CameraConfig, snapshots: SnapshotWriter | None) -> LiveSource | None:
    """The camera's main stream, decoded only for snapshots (when there is a snapshot_dir)."""
    if cam.evidence_source is None:
        return None
    if snapshots is None:
        log.warning("evidence_source given but no edge.snapshot_dir: not opened",
                    extra={"camera": cam.id})
        return None
    url = cam.evidence_source

    def status(state: CameraState, reason: str) -> None:
        log.info("evidence stream %s: %s", state.value, reason,
                 extra={"camera": cam.id, "state": state.value, "reason": reason})

    return LiveSource(f"{cam.id}:evidence", lambda: url, stall_s=cam.stall_seconds,
                      reconnect=cam.reconnect, on_status=status)


def with_snapshot(snapshots: SnapshotWriter, cam: LiveCamera, alarm: Alarm, frame: Frame,
                  size: tuple[int, int]) -> Alarm:
    """The alarm with its snapshot's name; the main stream's frame when it is fresh (within
    1 s of the detection frame), else the detection frame itself."""
    image = frame.image
    if cam.evidence is not None:
        cam.evidence_last = cam.evidence.slot.take() or cam.evidence_last
        main = cam.evidence_last
        if main is not None and abs(main.time - frame.time) <= 1.0:
            image = main.image
    name = snapshots.request(alarm, image, size)
    if name is None:
        return alarm
    return alarm.model_copy(update={
        "evidence": alarm.evidence.model_copy(update={"snapshot": name})})
