"""Recorded video as a frame source (live RTSP/ONVIF sources deliver the same ``Frame``).

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
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge.sources.feed import CameraState, LatestSlot, StatusCallback
from edge.sources.frame import Frame

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """A video that cannot be opened or decoded; the message names the file."""


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


class FileFeed:
    """A recorded file played to the live worker as if it were a camera, losing no frame.

    Each frame is put in the slot only once the previous one was taken, so the worker steps
    every frame in order, with the times a replay of the same file gives them: the live path
    and ``perimeter replay`` can be compared frame for frame. The feed reports ``online``
    while it plays and ``offline`` ("end of file") at the end.
    """

    def __init__(self, source: VideoFileSource, camera: str, *, on_status: StatusCallback,
                 wake: threading.Event | None = None,
                 on_frame: Callable[[Frame], None] | None = None,
                 max_frames: int | None = None):
        self.source = source
        self.max_frames = max_frames
        self.camera = camera
        self.slot = LatestSlot(wake)
        self.frames = 0
        self.reconnects = 0
        self.connected = False
        self.last_frame_mono: float | None = None
        self.done = threading.Event()
        self._on_status = on_status
        self._on_frame = on_frame
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"feed-{camera}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and timeout > 0:
            self._thread.join(timeout)

    def _run(self) -> None:
        self.connected = True
        self._on_status(CameraState.ONLINE, "playing file")
        try:
            for frame in self.source.frames():
                if self.max_frames is not None and frame.index > self.max_frames:
                    break
                while not self.slot.wait_taken(0.1):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                self.slot.put(frame)
                self.frames += 1
                self.last_frame_mono = time.monotonic()
                if self._on_frame is not None:
                    self._on_frame(frame)
            self.slot.wait_taken(10.0)  # the last frame is taken before "end of file"
        finally:
            self.connected = False
            self.source.close()
            self._on_status(CameraState.OFFLINE, "end of file")
            self.done.set()
