"""What the live worker reads a camera through: a feed that keeps a one-frame slot filled.

``LiveSource`` (``edge.sources.rtsp``: RTSP and ONVIF cameras, drones) is the feed of a real
camera; ``FileFeed`` (``edge.sources.file``) plays a recorded file to the same worker, so a
test can run recorded frames through the live path. Latency before throughput: a camera's
capture thread leaves only the newest frame in ``LatestSlot`` and every frame overwritten
unseen is counted as skipped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import StrEnum
from typing import Protocol

from edge.sources.frame import Frame


class CameraState(StrEnum):
    ONLINE = "online"  # frames arrive and are processed at the expected rate
    DEGRADED = "degraded"  # frames arrive, but too slowly, late, or the box cannot keep up
    OFFLINE = "offline"  # no stream: connecting, refused, unauthorised, stalled


StatusCallback = Callable[[CameraState, str], None]


class LatestSlot:
    """A one-frame hand-off where a newer frame replaces an unread one (counted as skipped)."""

    def __init__(self, wake: threading.Event | None = None):
        self._lock = threading.Condition()
        self._frame: Frame | None = None
        self._wake = wake
        self.skipped = 0

    def put(self, frame: Frame) -> bool:
        """Store ``frame``; True if it replaced one that was never taken."""
        with self._lock:
            replaced = self._frame is not None
            self._frame = frame
            self.skipped += replaced
        if self._wake is not None:
            self._wake.set()
        return replaced

    def take(self) -> Frame | None:
        with self._lock:
            frame, self._frame = self._frame, None
            self._lock.notify_all()
        return frame

    def wait_taken(self, timeout: float) -> bool:
        """Until the slot is empty (a lossless feed waits here); False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._frame is None, timeout)


class Feed(Protocol):
    """What the live worker (and the snapshot writer) read of a camera's feed."""

    slot: LatestSlot
    frames: int  # frames delivered so far
    reconnects: int  # connections lost after frames had flowed
    connected: bool
    last_frame_mono: float | None  # time.monotonic() of the newest frame

    def start(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...
