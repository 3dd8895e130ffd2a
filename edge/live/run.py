"""``perimeter run``: the live edge worker as a long-running service.

Everything that can be checked before a camera answers is checked first (config, model
files, ONVIF support, the metrics port), so a broken install fails at start with exit code 2
instead of running blind; cameras that are down are not an error (they are retried for ever
and reported offline), nor is a broker that cannot be reached yet (alarms wait in the outbox
and go out once it answers: an edge box that boots while the uplink is down still protects).
SIGTERM and Ctrl-C stop it cleanly: cameras are announced offline, the sinks are closed (MQTT
waits for its acknowledgements).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common import sdnotify
from common.yamlconfig import ConfigError
from edge.config import LoadedConfig
from edge.detection.base import NoDetector
from edge.detection.factory import make_detector
from edge.live.worker import Attachment, LiveWorker, OpenFeed
from edge.sinks import AlarmSink, JsonlSink, StdoutSink
from edge.snapshots import SnapshotWriter
from edge.sources.frame import Frame
from edge.uplink.sink import MqttSink
from wire import topics

if TYPE_CHECKING:
    from edge.detection.base import Detector
    from edge.metrics import EdgeMetrics

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    metrics_port: int | None = None  # serve Prometheus /metrics on 127.0.0.1:port
    alarms_out: Path | None = None
    quiet: bool = False  # no alarm lines on stdout


def check_cameras(loaded: LoadedConfig) -> None:
    """Every camera must be live (files: ``perimeter replay``), and ONVIF cameras need
    ``edge.sources.onvif``: say so at start, pointing at the camera."""
    for i, cam in enumerate(loaded.config.cameras):
        if not cam.is_live:
            raise ConfigError([f"{loaded.where(('cameras', i, 'source'))}: camera "
                               f"{cam.id!r} is a video file; perimeter run needs live "
                               f"cameras (files: perimeter replay)"])
        if cam.onvif is not None:
            try:
                from edge.sources.onvif.client import resolve_stream_uri  # noqa: F401
            except ImportError as exc:
                raise ConfigError([f"{loaded.where(('cameras', i, 'onvif'))}: ONVIF cameras "
                                   f"need edge.sources.onvif, which cannot be imported: "
                                   f"{exc}"]) from exc


def build_worker(loaded: LoadedConfig, opts: RunOptions, *,
                 sinks: Sequence[AlarmSink] | None = None,
                 detector: Detector | None = None,
                 metrics: EdgeMetrics | None = None,
                 attachments: Sequence[Attachment] = (),
                 on_frame: Callable[[str, Frame], None] | None = None,
                 open_feed: OpenFeed | None = None) -> LiveWorker:
    """A worker for the config's cameras. ``sinks`` default to the options and config (JSONL,
    stdout, MQTT); the first ``MqttSink`` among them also carries the camera status.
    ``open_feed`` replaces the cameras' RTSP feeds (a test plays files through the worker)."""
    if open_feed is None:
        check_cameras(loaded)
    det = detector if detector is not None else (
        make_detector(loaded) if loaded.config.cameras else NoDetector())
    if sinks is None:
        built: list[AlarmSink] = []
        if opts.alarms_out is not None:
            built.append(JsonlSink(opts.alarms_out))
        if not opts.quiet:
            built.append(StdoutSink())
        if loaded.config.mqtt.enabled:
            built.append(MqttSink.from_config(loaded, require_connection=False))
        sinks = built
    mq = next((s for s in sinks if isinstance(s, MqttSink)), None)
    publish = None
    if mq is not None:
        broker = mq
        if metrics is not None:
            mq.session.on_clock = metrics.clock_offset.labels(mq.edge_id).set

        def publish(camera: str, payload: str) -> None:
            broker.publish_retained(topics.camera_status(broker.site, broker.edge_id, camera),
                                    payload)

    snap = loaded.config.edge.snapshot_dir
    snapshots = None
    if snap is not None:
        snapshots = SnapshotWriter(loaded.output_path(snap),
                                   quality=loaded.config.edge.snapshot_quality)
    return LiveWorker(loaded, det, sinks, metrics=metrics, attachments=attachments,
                      publish_status=publish, on_frame=on_frame, snapshots=snapshots,
                      open_feed=open_feed)


def radar_attachments(loaded: LoadedConfig, opts: RunOptions) -> list[Attachment]:
    """The radar intake (with camera fusion) when the config names radars: it subscribes to
    their track topics on the config's broker and raises alarms into the same sinks."""
    if not loaded.config.radars:
        return []
    from edge.radar.intake import RadarWorker

    kwargs = {}
    if opts.metrics_port is not None:
        from edge.radar.metrics import default_radar_metrics

        kwargs["metrics"] = default_radar_metrics()
    return [RadarWorker.from_config(loaded, **kwargs)]


def run_live(loaded: LoadedConfig, opts: RunOptions,
             stop: threading.Event | None = None) -> int:
    """Run until ``stop`` is set, SIGTERM or Ctrl-C (KeyboardInterrupt, re-raised)."""
    metrics = None
    if opts.metrics_port is not None:
        from edge.metrics import EdgeMetrics, default_metrics, serve

        metrics = default_metrics()
        metrics.latency_from = "capture"  # live frames carry their capture time
        serve(opts.metrics_port)
        assert isinstance(metrics, EdgeMetrics)
    if not log.isEnabledFor(logging.DEBUG):  # OpenCV's line per failed open repeats ours
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    worker = build_worker(loaded, opts, metrics=metrics,
                          attachments=radar_attachments(loaded, opts))
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        worker.start()
    except ConnectionError as exc:  # the broker refused us (credentials): a config problem
        raise ConfigError([f"{loaded.where(('mqtt',))}: {exc}"]) from exc
    cams = ", ".join(c.cfg.id for c in worker.cameras)
    print(f"perimeter run: {len(worker.cameras)} camera(s): {cams}; Ctrl-C stops",
          file=sys.stderr)
    watchdog = sdnotify.Watchdog(worker.turning)  # fed only while the frame loop turns
    watchdog.start()
    sdnotify.ready(f"{len(worker.cameras)} camera(s)")
    try:
        while not stop.wait(1.0):
            if not worker.alive:
                print(f"perimeter run: inference stopped ({worker.crashed}); exiting so the "
                      "service manager restarts the worker", file=sys.stderr)
                return 1
    finally:
        watchdog.stop()
        worker.stop()
    return 0
