"""Prometheus metrics of the edge pipeline.

``EdgeMetrics`` holds the metric objects, registered in one ``CollectorRegistry`` (the
process-wide ``REGISTRY`` unless given: tests pass a fresh one). A pipeline binds the label
children of its camera once (``EdgeMetrics.camera``), so a frame costs a handful of histogram
observations and no label lookups.

Metrics (label ``camera`` on all):

``perimeter_edge_frames_total``
    frames run through ``CameraPipeline.step``.
``perimeter_edge_alarms_total{zone,kind,state}``
    alarm events, counted once they have been handed to every sink.
``perimeter_edge_stage_seconds{stage}``
    time per frame in each stage: ``decode`` (waiting for the next frame from the source,
    measured in ``CameraPipeline.run``), ``detect`` (detector and box bookkeeping), ``track``,
    ``rules``, ``sinks`` (emitting that frame's alarm events).
``perimeter_edge_frame_to_alarm_seconds``
    latency of an alarm event. By default (``latency_from="handoff"``) it runs from the moment
    the decoded frame is handed to ``CameraPipeline.step`` to the moment the event has been
    emitted to every sink: replayed frames carry synthetic times, so the frame's own time says
    nothing about latency there. Live sources whose ``Frame.time`` is the real capture time
    (epoch seconds) use ``latency_from="capture"``: wall time at emission minus ``Frame.time``,
    which also counts capture, decode and queueing.
``perimeter_edge_fps``
    frames per second processed, over windows of about one second (and the whole run's
    average when ``run`` ends).
``perimeter_edge_dropped_frames_total``
    frames a live source dropped (latest-frame-wins hand-off); always 0 for replays, which
    process every frame.

Live cameras (``perimeter run``, ``edge.live.worker``) add:

``perimeter_edge_camera_status{state}``
    1 for the camera's current state (``online``, ``degraded``, ``offline``), 0 for the others.
``perimeter_edge_camera_fps``
    frames per second arriving from the camera (decoded by its capture thread).
``perimeter_edge_detect_fps``, ``perimeter_edge_detect_target_fps``
    detector runs per second on the camera's frames, and what ``detect_every`` implies at the
    stream's rate; ``perimeter_edge_over_capacity`` is 1 while the first stays below the second
    (the box cannot keep up).
``perimeter_edge_camera_reconnects_total``
    connections lost after frames had flowed (each is followed by reconnect attempts).
``perimeter_edge_clock_offset_seconds{edge}`` (no camera label)
    this box's clock minus the central's, measured from the central's clock messages
    (``edge.uplink.session``); absent until the first one arrives.
"""

from __future__ import annotations

import logging
import threading
from typing import Literal
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from common.once import Once
from common.yamlconfig import ConfigError

log = logging.getLogger(__name__)

STAGE_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
FPS_WINDOW_S = 1.0

LatencyFrom = Literal["handoff", "capture"]


class CameraMetrics:
    """The label children of one camera, bound once (what ``step`` touches per frame)."""

    def __init__(self, metrics: EdgeMetrics, camera: str):
        self.camera = camera
        self.latency_from: LatencyFrom = metrics.latency_from
        self._alarms = metrics.alarms
        self.frames: Counter = metrics.frames.labels(camera)
        self.stage: dict[str, Histogram] = {
            s: metrics.stage_seconds.labels(camera, s)
            for s in ("decode", "detect", "track", "rules", "sinks")}
        self.frame_to_alarm: Histogram = metrics.frame_to_alarm.labels(camera)
        self.fps: Gauge = metrics.fps.labels(camera)
        self.dropped: Counter = metrics.dropped_frames.labels(camera)
        self._window_start: float | None = None
        self._window_frames = 0

    def alarm(self, zone: str, kind: str, state: str) -> None:
        self._alarms.labels(self.camera, zone, kind, state).inc()

    def frame_done(self, started: float, now: float) -> None:
        """Count one frame (``started``/``now``: perf_counter at hand-off and at the end)."""
        self.frames.inc()
        if self._window_start is None:
            self._window_start = started
        self._window_frames += 1
        elapsed = now - self._window_start
        if elapsed >= FPS_WINDOW_S:
            self.fps.set(self._window_frames / elapsed)
            self._window_start, self._window_frames = now, 0


class EdgeMetrics:
    """The edge's metric objects in one registry (default: the process-wide one)."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY, *,
                 latency_from: LatencyFrom = "handoff"):
        self.registry = registry
        self.latency_from = latency_from
        self.frames = Counter("perimeter_edge_frames", "Frames processed by the pipeline",
                              ["camera"], registry=registry)
        self.alarms = Counter("perimeter_edge_alarms", "Alarm events emitted to the sinks",
                              ["camera", "zone", "kind", "state"], registry=registry)
        self.stage_seconds = Histogram(
            "perimeter_edge_stage_seconds",
            "Seconds per frame in each pipeline stage (decode, detect, track, rules, sinks)",
            ["camera", "stage"], buckets=STAGE_BUCKETS, registry=registry)
        self.frame_to_alarm = Histogram(
            "perimeter_edge_frame_to_alarm_seconds",
            "Seconds from a frame's hand-off to the pipeline (replays) or its capture time "
            "(live sources) until its alarm event was emitted to every sink",
            ["camera"], buckets=LATENCY_BUCKETS, registry=registry)
        self.fps = Gauge("perimeter_edge_fps", "Frames per second processed",
                         ["camera"], registry=registry)
        self.dropped_frames = Counter(
            "perimeter_edge_dropped_frames",
            "Frames dropped by a live source before processing (0 for replays)",
            ["camera"], registry=registry)
        self.camera_status = Gauge(
            "perimeter_edge_camera_status", "1 for a live camera's current state",
            ["camera", "state"], registry=registry)
        self.camera_fps = Gauge("perimeter_edge_camera_fps",
                                "Frames per second arriving from a live camera",
                                ["camera"], registry=registry)
        self.detect_fps = Gauge("perimeter_edge_detect_fps",
                                "Detector runs per second on a live camera's frames",
                                ["camera"], registry=registry)
        self.detect_target_fps = Gauge(
            "perimeter_edge_detect_target_fps",
            "Detector runs per second that detect_every implies at the camera's frame rate",
            ["camera"], registry=registry)
        self.over_capacity = Gauge(
            "perimeter_edge_over_capacity",
            "1 while a live camera gets fewer detections per second than it should",
            ["camera"], registry=registry)
        self.camera_reconnects = Counter(
            "perimeter_edge_camera_reconnects",
            "Live camera connections lost after frames had flowed", ["camera"],
            registry=registry)
        self.clock_offset = Gauge(
            "perimeter_edge_clock_offset_seconds",
            "This box's clock minus the central's (positive: the box runs ahead)", ["edge"],
            registry=registry)

    def camera(self, camera: str) -> CameraMetrics:
        return CameraMetrics(self, camera)


_default = Once(EdgeMetrics)
_servers: dict[tuple[str, int], WSGIServer] = {}
_lock = threading.Lock()


def default_metrics() -> EdgeMetrics:
    """The process-wide ``EdgeMetrics`` on ``REGISTRY`` (created once: names register once)."""
    return _default.get()


def serve(port: int, addr: str = "127.0.0.1",
          registry: CollectorRegistry = REGISTRY) -> None:
    """Serve ``/metrics`` over HTTP on addr:port in a daemon thread (once per address).

    A port that cannot be bound is a ``ConfigError`` (bad input: the command exits 2).
    """
    from prometheus_client import start_http_server

    with _lock:
        if (addr, port) in _servers:
            return
        try:
            server, _thread = start_http_server(port, addr=addr, registry=registry)
        except OSError as exc:
            raise ConfigError([f"metrics port {port}: cannot listen on {addr}:{port}: "
                               f"{exc.strerror or exc}"]) from exc
        _servers[(addr, port)] = server
    log.info("metrics served", extra={"url": f"http://{addr}:{port}/metrics"})


def stop_serving() -> None:
    """Shut down every server ``serve`` started (tests)."""
    with _lock:
        servers = list(_servers.values())
        _servers.clear()
    for server in servers:
        server.shutdown()
        server.server_close()
