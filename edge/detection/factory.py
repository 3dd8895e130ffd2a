"""The detector a config names: manifest entry (or a site's own weights), checked, built.

The models manifest resolves and checksums every file before anything loads it, so a
truncated or swapped model is refused with its name at start, not found out by fewer alarms.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.yamlconfig import ConfigError
from edge.config import CameraConfig, LoadedConfig
from edge.detection.base import Detector, DetectorError
from edge.detection.modality import default_conf, for_camera
from edge.detection.opencv import DarknetDetector, TensorflowSSDDetector
from edge.detection.slicing import FenceSlicer
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


def camera_conf(loaded: LoadedConfig, cam: CameraConfig) -> float:
    """The score a person needs on this camera: its own ``conf``, else its modality's."""
    if cam.conf is not None:
        return cam.conf
    return default_conf(cam.modality, loaded.config.detector.conf)


def base_conf(loaded: LoadedConfig) -> float:
    """The shared model's threshold: the lowest any camera needs."""
    return min([loaded.config.detector.conf,
                *(camera_conf(loaded, c) for c in loaded.config.cameras)])


def make_detector(loaded: LoadedConfig) -> Detector:
    """The config's detector (shared by its cameras), wrapped for tiling when asked for."""
    det = loaded.config.detector
    base = build_detector(model_entry(loaded), conf=base_conf(loaded), nms=det.nms,
                          input_size=det.input_size, device=det.device)
    return wrap_detector(base, det.tiling, nms=det.nms)


def camera_detector(loaded: LoadedConfig, cam: CameraConfig, shared: Detector,
                    fences: Sequence[Sequence[Sequence[float]]] = ()) -> Detector:
    """One camera's view of the shared detector: magnified slices around its ``fences``
    (pixels) when the config's tiling mode is ``fences``, its modality's preparation of the
    frame, its threshold (``shared`` itself for a plain visible camera)."""
    det = loaded.config.detector
    view = shared
    if det.tiling.mode == "fences" and fences:
        t = det.tiling
        view = FenceSlicer(shared, fences, input_size=det.input_size or model_entry(
            loaded).input_size, zoom=t.zoom, overlap=t.slice_overlap, margin=t.margin, nms=det.nms,
            camera=cam.id)
    return for_camera(view, modality=cam.modality, conf=camera_conf(loaded, cam),
                      base_conf=base_conf(loaded), polarity=cam.thermal_polarity)
