"""``perimeter replay``: a recorded video through the whole edge pipeline.

Everything that can be wrong with the input (config, video, zones against the frame size,
model files) is checked before any output file is created; then frames flow with a progress
bar, alarms go to every sink as they are raised, and a summary table closes the run.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from tqdm import tqdm

from common.yamlconfig import ConfigError
from edge.annotate import Annotator
from edge.camera import build_pipeline, build_rules
from edge.config import CameraConfig, LoadedConfig, video_path
from edge.detection.factory import make_detector
from edge.pipeline import STAGES, RunStats
from edge.sinks import AlarmSink, FanOut, JsonlSink, StdoutSink
from edge.sources.file import VideoFileSource, prefetch
from edge.sources.frame import Frame
from edge.uplink.sink import MqttSink
from zones.alarm import Alarm

if TYPE_CHECKING:
    from edge.metrics import EdgeMetrics

log = logging.getLogger(__name__)


@dataclass
class ReplayOptions:
    video: Path | None = None
    camera: str | None = None
    alarms_out: Path | None = None
    annotate: Path | None = None
    realtime: bool = False
    start_time: float | None = None
    mqtt: bool = False
    quiet: bool = False
    progress: bool = True
    loop: bool = False
    max_frames: int | None = None
    metrics_port: int | None = None  # serve Prometheus /metrics on 127.0.0.1:port


def pick_camera(loaded: LoadedConfig, camera: str | None) -> tuple[int, CameraConfig]:
    cams = loaded.config.cameras
    if not cams:
        raise ConfigError([f"{loaded.path}: no cameras (a radar-only site: perimeter run)"])
    if camera is None:
        return 0, cams[0]
    for i, cam in enumerate(cams):
        if cam.id == camera:
            return i, cam
    raise ConfigError([f"{loaded.path}: no camera {camera!r} (have: "
                       f"{', '.join(c.id for c in cams)})"])


class _TqdmStream:
    """Lets alarm lines print above the progress bar instead of through it."""

    def write(self, text: str) -> None:
        tqdm.write(text.rstrip("\n"), file=sys.stdout)

    def flush(self) -> None:
        sys.stdout.flush()


def run_replay(loaded: LoadedConfig, opts: ReplayOptions, out: IO[str] = sys.stdout) -> RunStats:
    """Validate everything, then replay; raises ConfigError/SourceError/ModelError early."""
    index, cam = pick_camera(loaded, opts.camera)
    video = opts.video or video_path(loaded, index)
    start = opts.start_time if opts.start_time is not None else time.time()
    source = VideoFileSource(video, start_time=start, fps=cam.fps, realtime=opts.realtime,
                             loop=opts.loop)
    rules = build_rules(loaded, index, cam, source.size)
    detector = make_detector(loaded)
    sinks: list[AlarmSink] = []
    if opts.alarms_out:
        sinks.append(JsonlSink(opts.alarms_out))
    if not opts.quiet:
        sinks.append(StdoutSink(_TqdmStream() if opts.progress else out))  # type: ignore[arg-type]
    if opts.mqtt or loaded.config.mqtt.enabled:
        sinks.append(MqttSink.from_config(loaded))
    metrics: EdgeMetrics | None = None
    if opts.metrics_port is not None:
        from edge.metrics import default_metrics, serve  # prometheus-client: only when asked

        metrics = default_metrics()
        try:
            serve(opts.metrics_port)
        except ConfigError:
            source.close()
            raise
    annot = Annotator(opts.annotate, source.fps, source.size, rules) if opts.annotate else None
    output = FanOut(sinks)
    pipeline = build_pipeline(loaded, rules, source.fps, detector, [output], metrics=metrics)
    total = opts.max_frames or (source.frame_count if not opts.loop else None) or None
    bar = tqdm(total=total, unit="frame", desc=cam.id, disable=not opts.progress,
               file=sys.stderr, dynamic_ncols=True)
    ok = False

    def frames() -> Iterator[Frame]:
        for f in prefetch(source.frames()):
            if opts.max_frames is not None and f.index > opts.max_frames:
                return
            yield f

    def on_frame(frame: Frame, events: list[Alarm]) -> None:
        if annot is not None:
            annot.draw(frame.image, pipeline.last_tracks, events)
        bar.update(1)

    opened = False
    try:
        output.open()
        opened = True
        stats = pipeline.run(frames(), on_frame)
        ok = True
    finally:
        bar.close()
        if opened:
            output.close()
        source.close()
        if annot is not None:
            annot.finish() if ok else annot.abort()
    return stats


def summary_table(stats: RunStats, detector: str = "") -> str:
    """The table printed at the end of a replay."""
    rows = [f"camera {stats.camera}: {stats.frames} frames in {stats.wall_s:.1f} s "
            f"= {stats.fps:.1f} frames/s {detector}".rstrip(),
            f"{'stage':<8} {'ms/frame':>9} {'share':>7}"]
    total = sum(stats.stage_s.values()) or 1.0
    for stage in STAGES:
        rows.append(f"{stage:<8} {stats.ms_per_frame(stage):9.2f} "
                    f"{100 * stats.stage_s[stage] / total:6.1f}%")
    rows.append(f"{'kind':<14} {'raised':>7} {'cleared':>8}")
    kinds = sorted({k for k, _ in stats.alarms})
    for kind in kinds:
        rows.append(f"{kind:<14} {stats.alarms[(kind, 'raised')]:7d} "
                    f"{stats.alarms[(kind, 'cleared')]:8d}")
    if not kinds:
        rows.append("(no alarms)")
    for zone, n in sorted(stats.by_zone.items()):
        rows.append(f"zone {zone}: {n} alarm(s) raised")
    rows.append(f"peak RSS {stats.peak_rss_mb:.0f} MB")
    return "\n".join(rows)
