"""Recorded video as a frame source (live RTSP/ONVIF sources build on the same ``Frame``).

Opening checks that the file exists and that a first frame decodes, so a missing or corrupt
video fails before any output is created. Frame times are the replay start time plus the
frame's offset at the file's rate; with ``realtime`` the source paces itself to that rate,
which is how a recorded file stands in for a live camera.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """A video that cannot be opened or decoded; the message names the file."""


@dataclass(frozen=True)
class Frame:
    index: int  # 1-based, as in MOTChallenge ground truth
    time: float  # seconds (epoch)
    image: npt.NDArray[np.uint8]


class VideoFileSource:
    """Decodes a video file frame by frame."""

    def __init__(self, path: Path, *, start_time: float, fps: float | None = None,
                 realtime: bool = False, loop: bool = False):
        if not path.exists():
            raise SourceError(f"{path}: video file not found")
        if not path.is_file():
            raise SourceError(f"{path}: not a file")
        self.path = path
        self.cap = cv2.VideoCapture(str(path))
        ok, raw = self.cap.read() if self.cap.isOpened() else (False, None)
        if not ok or raw is None:
            self.cap.release()
            raise SourceError(f"{path}: cannot decode video (corrupt or unsupported format)")
        first = np.asarray(raw, dtype=np.uint8)
        self._first: npt.NDArray[np.uint8] | None = first
        file_fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps or (file_fps if 0 < file_fps <= 240 else 25.0)
        self.frame_count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.size = (int(first.shape[1]), int(first.shape[0]))
        self.start_time = start_time
        self.realtime = realtime
        self.loop = loop
        self.loops = 0

    def frames(self) -> Iterator[Frame]:
        """Every frame in order, 1-based; ``loop`` restarts at the end with time running on."""
        index = 0
        t0 = time.monotonic()
        while True:
            if self._first is not None:
                image: npt.NDArray[np.uint8] = self._first
                self._first = None
            else:
                ok, raw = self.cap.read()
                if not ok:
                    if self.loop and index > 0:
                        self.loops += 1
                        self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                        ok, raw = self.cap.read()
                    if not ok:
                        if self.frame_count and index < self.frame_count - 1:
                            log.warning("video ended early", extra={
                                "path": str(self.path), "decoded": index,
                                "expected": self.frame_count})
                        return
                image = np.asarray(raw, dtype=np.uint8)
            index += 1
            offset = (index - 1) / self.fps
            if self.realtime:
                delay = t0 + offset - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield Frame(index=index, time=self.start_time + offset, image=image)

    def close(self) -> None:
        self.cap.release()


def prefetch(frames: Iterator[Frame], depth: int = 4) -> Iterator[Frame]:
    """Decode ahead in a thread, through a bounded queue, so decoding overlaps inference.

    Replays need every frame, so the queue blocks rather than dropping (live sources use
    latest-frame-wins instead). A decoder error is re-raised in the consumer.
    """
    q: queue.Queue[Frame | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Frame | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def worker() -> None:
        try:
            for f in frames:
                if not put(f):
                    return
            put(None)
        except BaseException as exc:  # handed to the consumer, not lost in the thread
            put(exc)

    thread = threading.Thread(target=worker, name="decode", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
