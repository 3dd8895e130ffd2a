"""The one frame step: detect -> stamp -> track -> rules -> evidence -> sinks -> metrics.

Replays (``perimeter replay``, the benchmarks) and live cameras (``perimeter run``) run every
frame through ``CameraPipeline.step``, so a scored replay measures the code a camera runs.
A live camera with ``detect_every > 1`` steps frames without detection too (``detect=False``):
the tracker predicts, the rules still run on frame time (``edge.tracker.StridedTracker``).
Replays call ``run``, which steps every frame in order (scored replays must be exact) and
adds the wait for the next decoded frame; each stage's time is accumulated so a run reports
where the time went.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from edge.appearance import appearance
from edge.detection.base import Detector
from edge.sinks import AlarmSink
from edge.sources.frame import Frame
from edge.tracker import StridedTracker
from zones.alarm import Alarm, AlarmState
from zones.engine import CameraRules
from zones.tracks import Detections

if TYPE_CHECKING:
    from edge.metrics import CameraMetrics, EdgeMetrics

log = logging.getLogger(__name__)

STAGES = ("decode", "detect", "track", "rules", "sinks")

Observer = Callable[[Detections], None]


class Evidence(Protocol):
    """Adds evidence (a snapshot's name) to a raised alarm, from the frame that raised it."""

    def attach(self, alarm: Alarm, frame: Frame) -> Alarm: ...


@dataclass
class RunStats:
    """What a run did and where its time went."""

    camera: str
    frames: int = 0
    wall_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    alarms: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, state)
    by_zone: Counter[str] = field(default_factory=Counter)
    detections: int = 0  # people detected, summed over frames
    detector_runs: int = 0  # frames the detector ran on
    appearance_s: float = 0.0  # of the track stage: colour histograms for re-association
    peak_rss_mb: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def ms_per_frame(self, stage: str) -> float:
        return 1000.0 * self.stage_s[stage] / self.frames if self.frames else 0.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class CameraPipeline:
    """Detector, tracker and rules of one camera, fanning alarm events out to sinks.

    ``evidence`` (snapshots) decorates raised alarms before the sinks see them;
    ``observers`` (radar fusion) get the tracked people after every frame and must be cheap;
    one that raises is logged, never stops the camera. With ``metrics``
    (``edge.metrics.EdgeMetrics``) every frame also feeds the Prometheus metrics; without,
    ``step`` does no metrics work at all.
    """

    def __init__(self, camera: str, detector: Detector, tracker: StridedTracker,
                 rules: CameraRules, sinks: Sequence[AlarmSink],
                 metrics: EdgeMetrics | None = None, *, evidence: Evidence | None = None,
                 observers: Sequence[Observer] = ()):
        self.camera = camera
        self.detector = detector
        self.tracker = tracker
        self.rules = rules
        self.sinks = list(sinks)
        self.evidence = evidence
        self.observers = list(observers)
        self.stats = RunStats(camera=camera)
        self.last_tracks: Detections | None = None
        # A person's colour histogram only where a rule re-associates broken tracks with it.
        self.look = rules.needs_appearance
        self.metrics: CameraMetrics | None = (
            metrics.camera(camera) if metrics is not None else None)

    def step(self, frame: Frame, *, detect: bool = True) -> list[Alarm]:
        """Run one frame through every stage; returns the alarm events it emitted."""
        m = self.metrics
        t0 = time.perf_counter()
        if detect:
            dets = self.detector.detect(frame.image)
            h, w = frame.image.shape[:2]
            # The detector already validated the arrays: only stamp camera and frame on them.
            dets = dataclasses.replace(dets, camera=self.camera, frame=frame.index,
                                       time=frame.time, frame_size=(w, h))
            t1 = time.perf_counter()
            tracks = self.tracker.update(dets)
            self.stats.detector_runs += 1
            self.stats.detections += len(dets)
        else:
            t1 = t0
            tracks = self.tracker.predict(frame.index, frame.time)
        if self.look:
            ta = time.perf_counter()
            tracks = tracks.with_appearance(appearance(frame.image, tracks.boxes))
            self.stats.appearance_s += time.perf_counter() - ta
        t2 = time.perf_counter()
        events = self.rules.step(tracks)
        t3 = time.perf_counter()
        emitted = [self._emit(alarm, frame, t0) for alarm in events]
        t4 = time.perf_counter()
        self._observe(tracks)
        st = self.stats.stage_s
        st["detect"] += t1 - t0
        st["track"] += t2 - t1
        st["rules"] += t3 - t2
        st["sinks"] += t4 - t3
        self.stats.frames += 1
        self.last_tracks = tracks
        if m is not None:
            if detect:
                m.stage["detect"].observe(t1 - t0)
            m.stage["track"].observe(t2 - t1)
            m.stage["rules"].observe(t3 - t2)
            m.stage["sinks"].observe(t4 - t3)
            m.frame_done(t0, t4)
        return emitted

    def _emit(self, alarm: Alarm, frame: Frame, started: float) -> Alarm:
        if self.evidence is not None and alarm.state is AlarmState.RAISED:
            alarm = self.evidence.attach(alarm, frame)
        for sink in self.sinks:
            sink.emit(alarm)
        self.stats.alarms[(alarm.kind.value, alarm.state.value)] += 1
        self.stats.by_zone[alarm.zone] += alarm.state is AlarmState.RAISED
        m = self.metrics
        if m is not None:
            m.alarm(alarm.zone, alarm.kind.value, alarm.state.value)
            m.frame_to_alarm.observe(time.perf_counter() - started if m.latency_from == "handoff"
                                     else max(0.0, time.time() - frame.time))
        return alarm

    def _observe(self, tracks: Detections) -> None:
        for observe in self.observers:
            try:
                observe(tracks)
            except Exception:
                log.exception("track observer failed", extra={"camera": self.camera})

    def run(self, frames: Iterable[Frame],
            on_frame: Callable[[Frame, list[Alarm]], None] | None = None) -> RunStats:
        """Step every frame until the source ends; decode time is counted here."""
        start = time.perf_counter()
        m = self.metrics
        iterator = iter(frames)
        while True:
            t_dec = time.perf_counter()
            try:
                frame = next(iterator)
            except StopIteration:
                break
            dec = time.perf_counter() - t_dec
            self.stats.stage_s["decode"] += dec
            if m is not None:
                m.stage["decode"].observe(dec)
            events = self.step(frame)
            if on_frame is not None:
                on_frame(frame, events)
        self.stats.wall_s = time.perf_counter() - start
        self.stats.peak_rss_mb = peak_rss_mb()
        if m is not None:
            m.fps.set(self.stats.fps)
        return self.stats
