"""The detector a config names: manifest entry (or a site's own weights), checked, built.

The models manifest resolves and checksums every file before anything loads it, so a
truncated or swapped model is refused with its name at start, not found out by fewer alarms.
"""

from __future__ import annotations

from common.yamlconfig import ConfigError
from edge.config import LoadedConfig
from edge.detection.base import Detector, DetectorError
from edge.detection.opencv import DarknetDetector, TensorflowSSDDetector
from edge.detection.tiling import wrap_detector
from models.registry import ModelEntry, load_manifest, resolve_model


def build_detector(entry: ModelEntry, *, conf: float, nms: float,
                   input_size: tuple[int, int] | None = None,
                   device: str = "cpu") -> Detector:
    """Instantiate the back end a manifest entry names, after verifying its files."""
    size = input_size or entry.input_size
    files = resolve_model(entry, size, convert_missing=True)
    classes = entry.person_classes
    if entry.backend == "opencv-darknet":
        return DarknetDetector(files["cfg"], files["weights"], input_size=size, classes=classes,
                               conf=conf, nms=nms, name=entry.name)
    if entry.backend == "opencv-tensorflow":
        return TensorflowSSDDetector(files["weights"], files["config"], input_size=size,
                                     classes=classes, conf=conf, name=entry.name)
    if entry.backend == "onnx-yolov8":
        from edge.detection.onnx_yolo import OnnxYoloDetector  # onnxruntime: only when asked

        return OnnxYoloDetector(files["onnx"], input_size=size, classes=classes, conf=conf,
                                nms=nms, name=entry.name)
    if entry.backend == "ultralytics":
        # torch is imported only when a manifest entry or a site's weights ask for it
        from edge.detection.ultra import UltralyticsDetector

        return UltralyticsDetector(files["weights"], input_size=size, classes=classes,
                                   conf=conf, nms=nms, device=device, name=entry.name)
    raise DetectorError(f"model {entry.name}: unknown backend {entry.backend!r}")


def model_entry(loaded: LoadedConfig) -> ModelEntry:
    """The manifest entry the config's ``detector`` names, or one for its own weights."""
    det = loaded.config.detector
    if det.weights:
        return ModelEntry.user_weights(str(loaded.resolve_path(det.weights)), det.sha256,
                                       det.input_size or (640, 640), det.classes)
    manifest = load_manifest()
    if det.model not in manifest:
        raise ConfigError([f"{loaded.where(('detector', 'model'))}: unknown model "
                           f"{det.model!r} (have: {', '.join(sorted(manifest))})"])
    entry = manifest[det.model]
    return entry.model_copy(update={"person_classes": det.classes}) if det.classes else entry


def make_detector(loaded: LoadedConfig) -> Detector:
    """The config's detector, wrapped for tiling when the config asks for it."""
    det = loaded.config.detector
    base = build_detector(model_entry(loaded), conf=det.conf, nms=det.nms,
                          input_size=det.input_size, device=det.device)
    return wrap_detector(base, det.tiling, nms=det.nms)
