"""Evidence snapshots: a JPEG of the frame that raised an alarm, for the operator to judge it.

An operator deciding whether to send a ranger at night wants to see what the camera saw, not
only a box's coordinates. When an alarm is raised the pipeline's evidence hook
(``CameraEvidence``) hands the frame (the main stream's newest frame when ``evidence_source``
is set and fresh, else the frame the detector saw) and the alarm's boxes to
``SnapshotWriter.request``, which names the file at once (the name goes into the alarm's
evidence, so the alarm is not delayed) and encodes and writes it on its own thread. The queue
is bounded: when the disk or the CPU cannot keep up, snapshots are dropped and counted, alarms
never wait.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge.config import CameraConfig
from edge.sources.feed import CameraState
from edge.sources.frame import Frame
from edge.sources.rtsp import LiveSource
from zones.alarm import Alarm

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


class CameraEvidence:
    """One camera's snapshots: the pipeline's ``Evidence`` hook for its raised alarms.

    The snapshot shows the main stream's frame when ``evidence_source`` names one and its
    newest frame is fresh (within 1 s of the detection frame), else the detection frame.
    """

    def __init__(self, camera: str, writer: SnapshotWriter, main: LiveSource | None = None):
        self.camera = camera
        self.writer = writer
        self.main = main  # the main stream, decoded only for snapshots
        self.last: Frame | None = None  # its newest frame

    @classmethod
    def for_camera(cls, cam: CameraConfig,
                   writer: SnapshotWriter | None) -> CameraEvidence | None:
        """The camera's evidence when the edge writes snapshots (``edge.snapshot_dir``)."""
        if writer is None:
            if cam.evidence_source is not None:
                log.warning("evidence_source given but no edge.snapshot_dir: not opened",
                            extra={"camera": cam.id})
            return None
        if cam.evidence_source is None:
            return cls(cam.id, writer)
        url = cam.evidence_source

        def status(state: CameraState, reason: str) -> None:
            log.info("evidence stream %s: %s", state.value, reason,
                     extra={"camera": cam.id, "state": state.value, "reason": reason})

        main = LiveSource(f"{cam.id}:evidence", lambda: url, stall_s=cam.stall_seconds,
                          reconnect=cam.reconnect, on_status=status)
        return cls(cam.id, writer, main)

    def start(self) -> None:
        if self.main is not None:
            self.main.start()

    def stop(self) -> None:
        if self.main is not None:
            self.main.stop()

    def attach(self, alarm: Alarm, frame: Frame) -> Alarm:
        """The alarm with its snapshot's name (unchanged when the writer is behind)."""
        image = frame.image
        if self.main is not None:
            self.last = self.main.slot.take() or self.last
            if self.last is not None and abs(self.last.time - frame.time) <= 1.0:
                image = self.last.image
        h, w = frame.image.shape[:2]
        name = self.writer.request(alarm, image, (w, h))
        if name is None:
            return alarm
        return alarm.model_copy(update={
            "evidence": alarm.evidence.model_copy(update={"snapshot": name})})
