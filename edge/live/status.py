"""Each live camera's status (online, degraded, offline, with a reason), published on change.

The capture thread owns the connection (online/offline); the inference thread may mark a
connected camera degraded (over capacity, frames late). Changes go to a callback (MQTT,
retained: ``wire.topics.camera_status``) and to Prometheus.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from edge.sources.feed import CameraState
from wire import messages

Publish = Callable[[str, str], None]  # (camera, JSON payload)


class StatusBoard:
    """Each camera's state and reason; publishes changes (thread-safe).

    The capture thread owns the connection (online/offline); the inference thread may mark
    a connected camera degraded (over capacity, frames late). Offline wins over degraded.
    """

    def __init__(self, cameras: list[str], edge_id: str, publish: Publish | None = None,
                 on_change: Callable[[str, CameraState, str], None] | None = None):
        self.edge_id = edge_id
        self._publish = publish
        self._on_change = on_change
        self._lock = threading.Lock()
        self._order = threading.Lock()
        self._link: dict[str, tuple[CameraState, str]] = {
            c: (CameraState.OFFLINE, "connecting") for c in cameras}
        self._degraded: dict[str, str | None] = dict.fromkeys(cameras)
        self._shown: dict[str, tuple[CameraState, str] | None] = dict.fromkeys(cameras)

    def link(self, camera: str, state: CameraState, reason: str) -> None:
        with self._lock:
            self._link[camera] = (state, reason)
        self._refresh(camera)

    def degrade(self, camera: str, reason: str | None) -> None:
        """Mark (a reason) or unmark (None) a connected camera as degraded."""
        with self._lock:
            self._degraded[camera] = reason
        self._refresh(camera)

    def get(self, camera: str) -> tuple[CameraState, str]:
        with self._lock:
            return self._effective(camera)

    def _effective(self, camera: str) -> tuple[CameraState, str]:
        link = self._link[camera]
        why = self._degraded[camera]
        if link[0] is CameraState.ONLINE and why:
            return CameraState.DEGRADED, why
        return link

    def _refresh(self, camera: str) -> None:
        with self._order:  # two threads' changes are announced in the order decided
            with self._lock:
                now = self._effective(camera)
                if now == self._shown[camera]:
                    return
                self._shown[camera] = now
            self.announce(camera, *now)

    def announce(self, camera: str, state: CameraState, reason: str) -> None:
        if self._on_change is not None:
            self._on_change(camera, state, reason)
        if self._publish is not None:
            self._publish(camera, messages.camera_status(state.value, camera, self.edge_id,
                                                         reason))

    def announce_all(self, state: CameraState, reason: str) -> None:
        """Every camera to ``state`` (``offline`` on a clean stop)."""
        for camera in list(self._link):
            with self._order:
                with self._lock:
                    self._link[camera] = (state, reason)
                    self._shown[camera] = (state, reason)
                self.announce(camera, state, reason)
