"""One camera assembled from the config: its rules, its tracker, its pipeline.

Replays and the live worker build a camera's pipeline here, so both run the same parts with
the same settings; only where frames come from and where alarms go differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from common.yamlconfig import ConfigError
from edge.config import CameraConfig, LoadedConfig
from edge.detection.base import Detector
from edge.detection.factory import camera_detector
from edge.pipeline import CameraPipeline, Evidence, Observer
from edge.sinks import AlarmSink
from edge.tracker import ByteTracker, StridedTracker
from zones.engine import CameraRules, ZoneGeometryError
from zones.geometry import ZoneKind
from zones.profiles import Schedule

if TYPE_CHECKING:
    from edge.metrics import EdgeMetrics


def build_rules(loaded: LoadedConfig, index: int, cam: CameraConfig,
                size: tuple[int, int]) -> CameraRules:
    """Camera ``index``'s fence rules for frames of ``size`` (w, h); a zone that does not fit
    the frame is a ``ConfigError`` naming its line."""
    cfg = loaded.config
    try:
        return CameraRules(
            cam.id, cam.zones, size, Schedule(cfg.periods, cfg.site.timezone),
            cam.calibration, forget_after_s=cfg.tracker.lost_seconds + 1.0,
            zone_path=("cameras", index, "zones"))
    except ZoneGeometryError as exc:
        raise ConfigError([f"{loaded.where(exc.where)}: {exc}"]) from exc


def build_tracker(loaded: LoadedConfig, fps: float) -> StridedTracker:
    """ByteTrack with the config's settings, for a stream of ``fps`` frames/s."""
    return StridedTracker(ByteTracker(loaded.config.tracker, fps))


def build_pipeline(loaded: LoadedConfig, rules: CameraRules, fps: float, detector: Detector,
                   sinks: Sequence[AlarmSink], *, metrics: EdgeMetrics | None = None,
                   evidence: Evidence | None = None,
                   observers: Sequence[Observer] = ()) -> CameraPipeline:
    """A camera's pipeline (``rules`` from ``build_rules``: callers build them first, so a
    zone that does not fit is reported before a model loads) for a stream of ``fps``."""
    cam = next((c for c in loaded.config.cameras if c.id == rules.camera), None)
    if cam is not None:  # the camera's fence slices, modality and threshold over the model
        fences = [z.fence.points for z in rules.zones if z.config.kind is not ZoneKind.CROWD]
        detector = camera_detector(loaded, cam, detector, fences)
    return CameraPipeline(rules.camera, detector, build_tracker(loaded, fps), rules, sinks,
                          metrics, evidence=evidence, observers=observers)
