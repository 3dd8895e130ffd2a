"""The live edge worker: several cameras on one box, one inference thread shared fairly.

Each camera has a capture thread (a feed: ``edge.sources.rtsp``) that keeps only its newest
frame.
One inference thread serves them round robin: it takes the next camera after the one it
served last that has a fresh frame, so a busy camera cannot starve the others and every
camera's latency is bounded by one pass over the cameras. The detector (one model in memory
for all cameras) runs when at least ``detect_every`` frames of that camera's stream have
arrived since its last detection (so skipped frames do not thin detection out further); the
other frames step tracker prediction and rules only (``edge.tracker.StridedTracker``). Every
frame goes through the camera's ``edge.pipeline.CameraPipeline.step``, the step replays run.
A camera's pipeline is built at its first frame, when the stream's size is known, and its
rules are rebuilt if the size changes after a reconnect.

Attachments (radar, fusion) plug in beside the cameras: each gets a thread-safe ``emit`` that
sends its alarms to the same sinks, and every camera's tracked people after every processed
frame (``on_tracks``, a pipeline observer called from the inference thread: it must be cheap).

Camera status (``edge.live.status.StatusBoard``) goes to Prometheus and, with MQTT enabled, to
the retained camera status topic (``wire.topics.camera_status``, ``wire.messages``). A clean
stop publishes ``offline``; after a crash the edge's own status topic (last will) says offline
while camera topics keep their last state, so consumers read both.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from common.yamlconfig import ConfigError
from edge.camera import build_pipeline, build_rules
from edge.config import CameraConfig, LoadedConfig
from edge.detection.base import Detector
from edge.live.capacity import CapacityMonitor
from edge.live.status import StatusBoard
from edge.pipeline import CameraPipeline
from edge.sinks import AlarmSink, FanOut
from edge.snapshots import CameraEvidence, SnapshotWriter
from edge.sources.feed import CameraState, Feed, StatusCallback
from edge.sources.frame import Frame
from edge.sources.rtsp import LiveSource, stream_url
from zones.alarm import Alarm
from zones.tracks import Detections

if TYPE_CHECKING:
    from edge.metrics import EdgeMetrics

log = logging.getLogger(__name__)

WINDOW_S = 3.0  # capacity and fps are judged over windows this long
DEFAULT_FPS = 25.0  # a live stream's rate for the tracker when the config names none

OnFrame = Callable[[Frame], None]
OpenFeed = Callable[[CameraConfig, StatusCallback, threading.Event, OnFrame | None], Feed]


def rtsp_feed(cam: CameraConfig, on_status: StatusCallback, wake: threading.Event,
              on_frame: OnFrame | None) -> Feed:
    """A live camera's feed: RTSP (drones too) or an ONVIF device's resolved stream."""
    return LiveSource(cam.id, stream_url(cam), stall_s=cam.stall_seconds,
                      reconnect=cam.reconnect, on_status=on_status, wake=wake,
                      on_frame=on_frame)


class Attachment(Protocol):
    """A non-camera source (radar, fusion) running beside the cameras."""

    def start(self, emit: Callable[[Alarm], None]) -> None: ...

    def on_tracks(self, tracks: Detections) -> None: ...

    def stop(self) -> None: ...


@dataclass
class LiveCamera:
    """One camera's state in the inference thread."""

    index: int
    cfg: CameraConfig
    source: Feed
    capacity: CapacityMonitor
    evidence: CameraEvidence | None = None  # snapshots, from the main stream if there is one
    pipeline: CameraPipeline | None = None  # built at the first frame (its size is known)
    size: tuple[int, int] | None = None
    failed: str | None = None  # a config problem found at the first frame: not processed
    last_detect: int | None = None
    skipped_seen: int = 0
    over: str | None = None  # over capacity: why
    reconnects_seen: int = 0

    @property
    def processed(self) -> int:
        """Frames stepped through the pipeline."""
        return self.pipeline.stats.frames if self.pipeline is not None else 0

    @property
    def detector_runs(self) -> int:
        """Frames the detector ran on."""
        return self.pipeline.stats.detector_runs if self.pipeline is not None else 0


class LiveWorker:
    """Live cameras -> one shared detector -> per-camera pipeline (tracker, rules) -> sinks."""

    def __init__(self, loaded: LoadedConfig, detector: Detector, sinks: Sequence[AlarmSink], *,
                 metrics: EdgeMetrics | None = None, attachments: Sequence[Attachment] = (),
                 publish_status: Callable[[str, str], None] | None = None,
                 on_frame: Callable[[str, Frame], None] | None = None,
                 snapshots: SnapshotWriter | None = None, open_feed: OpenFeed | None = None):
        cfg = loaded.config
        self.loaded = loaded
        self.detector = detector
        self.output = FanOut(sinks)
        self.metrics = metrics
        self.attachments = list(attachments)
        self.snapshots = snapshots
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next = 0
        self.crashed: str | None = None
        self.board = StatusBoard([c.id for c in cfg.cameras], cfg.edge.id, publish_status,
                                 self._status_changed)
        self.cameras: list[LiveCamera] = []
        open_feed = open_feed or rtsp_feed
        for i, cam in enumerate(cfg.cameras):
            source = open_feed(cam, functools.partial(self.board.link, cam.id), self._wake,
                               functools.partial(on_frame, cam.id) if on_frame else None)
            evidence = CameraEvidence.for_camera(cam, snapshots) if snapshots else None
            self.cameras.append(LiveCamera(i, cam, source, CapacityMonitor(cam.detect_every),
                                           evidence))

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Open sinks, start attachments, capture threads and the inference thread."""
        self.output.open()
        for a in self.attachments:
            a.start(self.emit)
        if self.snapshots is not None:
            self.snapshots.start()
        for c in self.cameras:
            self.board.announce(c.cfg.id, CameraState.OFFLINE, "connecting")
            c.source.start()
            if c.evidence is not None:
                c.evidence.start()
        self._thread = threading.Thread(target=self._loop, name="inference", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop everything; cameras are announced offline before the sinks close."""
        self._stop.set()
        self._wake.set()
        for c in self.cameras:
            c.source.stop()
            if c.evidence is not None:
                c.evidence.stop()
        if self._thread is not None:
            self._thread.join(30)
        if self.snapshots is not None:
            self.snapshots.stop()
        for a in self.attachments:
            try:
                a.stop()
            except Exception:
                log.exception("attachment failed to stop")
        self.board.announce_all(CameraState.OFFLINE, "edge worker stopped")
        self.output.close()

    def emit(self, alarm: Alarm) -> None:
        """Send one alarm to every sink (thread-safe: attachments call it from their threads)."""
        self.output.emit(alarm)

    # -- the inference thread -----------------------------------------------------------------

    last_turn = 0.0  # time.monotonic() of the frame loop's latest turn (0: not yet)

    def turning(self, within_s: float = 10.0) -> bool:
        """The frame loop turned within ``within_s`` (a hung detector stops it): what feeds
        systemd's watchdog."""
        return self.alive and time.monotonic() - self.last_turn < within_s

    @property
    def alive(self) -> bool:
        """False once the inference thread has died: nothing is detected any more, so the
        service must exit (and be restarted) rather than look healthy."""
        return self._thread is not None and self._thread.is_alive() and self.crashed is None

    def _loop(self) -> None:
        try:
            self._serve()
        except Exception as exc:  # logged and flagged: ``alive`` turns False, the service exits
            self.crashed = f"{type(exc).__name__}: {exc}"
            log.critical("inference thread died: no camera is protected any more",
                         exc_info=True, extra={"error": self.crashed})

    def _serve(self) -> None:
        next_window = time.monotonic() + WINDOW_S
        while not self._stop.is_set():
            self.last_turn = time.monotonic()  # the service watchdog's proof of life
            self._wake.wait(0.25)
            self._wake.clear()
            while not self._stop.is_set() and self._serve_one():
                if time.monotonic() >= next_window:
                    break
            if time.monotonic() >= next_window:
                next_window = time.monotonic() + WINDOW_S
                self._judge_windows()
            self._judge_lateness()

    def _serve_one(self) -> bool:
        """Process the next camera's fresh frame, round robin; False if none has one."""
        n = len(self.cameras)
        for step in range(n):
            cam = self.cameras[(self._next + step) % n]
            frame = cam.source.slot.take()
            if frame is None:
                continue
            self._next = (self._next + step + 1) % n
            if cam.failed is None:
                try:
                    self._process(cam, frame)
                except Exception:  # one bad frame must not end protection for every camera
                    log.exception("frame processing failed", extra={"camera": cam.cfg.id})
            return True
        return False

    def _process(self, cam: LiveCamera, frame: Frame) -> None:
        h, w = frame.image.shape[:2]
        if (cam.pipeline is None or cam.size != (w, h)) and not self._setup(cam, (w, h)):
            return
        assert cam.pipeline is not None
        detect = cam.last_detect is None or frame.index - cam.last_detect >= cam.cfg.detect_every
        cam.pipeline.step(frame, detect=detect)
        if detect:
            cam.last_detect = frame.index

    def _setup(self, cam: LiveCamera, size: tuple[int, int]) -> bool:
        """The camera's pipeline for frames of ``size`` (its rules rebuilt when the size
        changed after a reconnect); False, and the camera offline, if its zones do not fit."""
        if cam.size is not None:
            log.warning("camera frame size changed: rules rebuilt", extra={
                "camera": cam.cfg.id, "was": cam.size, "now": size})
        try:
            rules = build_rules(self.loaded, cam.index, cam.cfg, size)
        except ConfigError as exc:
            cam.failed = "; ".join(exc.lines)
            log.error("camera zones do not fit its stream", extra={
                "camera": cam.cfg.id, "size": size, "error": cam.failed})
            self.board.link(cam.cfg.id, CameraState.OFFLINE, f"config: {cam.failed}")
            cam.source.stop(timeout=0)
            return False
        if cam.pipeline is None:
            cam.pipeline = build_pipeline(
                self.loaded, rules, cam.cfg.fps or DEFAULT_FPS, self.detector, [self.output],
                metrics=self.metrics, evidence=cam.evidence,
                observers=[a.on_tracks for a in self.attachments])
        else:
            cam.pipeline.rules = rules
        cam.size = size
        return True

    def _judge_windows(self) -> None:
        """Per camera: stream and detection fps, capacity, lateness, skips and reconnects."""
        now = time.monotonic()
        for cam in self.cameras:
            src, m = cam.source, self.metrics
            cap = cam.capacity.window(now, src.frames, cam.detector_runs)
            skipped = src.slot.skipped
            if m is not None:
                cid = cam.cfg.id
                m.dropped_frames.labels(cid).inc(skipped - cam.skipped_seen)
                m.camera_reconnects.labels(cid).inc(src.reconnects - cam.reconnects_seen)
                if cap is not None:
                    cap.export(m, cid)
            cam.skipped_seen, cam.reconnects_seen = skipped, src.reconnects
            cam.over = None
            if cap is not None and cap.over:
                cam.over = (f"over capacity: {cap.detect_fps:.1f} of {cap.target_fps:.1f} "
                            f"detections/s")
                if cap.changed:
                    log.warning("edge over capacity: camera %s gets %s; add a box, lower "
                                "the stream's fps or raise detect_every", cam.cfg.id,
                                cam.over.removeprefix("over capacity: "), extra={
                                    "camera": cam.cfg.id, "detect_fps": round(cap.detect_fps, 2),
                                    "target_fps": round(cap.target_fps, 2),
                                    "skipped_total": skipped})
            elif cap is not None and cap.changed:
                log.info("edge back within capacity", extra={"camera": cam.cfg.id})

    def _judge_lateness(self) -> None:
        """Degraded while a connected camera sends nothing for half its stall time (it is
        reconnected at the full stall time), or while the box is over capacity for it."""
        now = time.monotonic()
        for cam in self.cameras:
            src, reason = cam.source, cam.over
            last = src.last_frame_mono
            if src.connected and last is not None and now - last > cam.cfg.stall_seconds / 2:
                reason = "late: no frame for more than half the stall time"
            self.board.degrade(cam.cfg.id, reason)

    def _status_changed(self, camera: str, state: CameraState, reason: str) -> None:
        if self.metrics is not None:
            for s in CameraState:
                self.metrics.camera_status.labels(camera, s.value).set(1 if s is state else 0)
        log.info("camera %s %s: %s", camera, state.value, reason,
                 extra={"camera": camera, "state": state.value, "reason": reason})
