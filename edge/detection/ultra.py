"""Ultralytics YOLO as a person detector, for any weights a site supplies (.pt, .onnx, OpenVINO).

Why a module of its own: ``ultralytics`` pulls in torch (seconds to import, hundreds of MB), so
``edge.detection.factory`` imports this module only when a manifest entry names the ``ultralytics``
back end, and this module imports ``ultralytics`` only when a detector is built.

Why the environment below: by default Ultralytics reaches out to the network (an online check at
import, anonymous usage events, pip "AutoUpdate" of missing requirements, downloads of official
weights asked for by bare name, fonts for plotting). An edge box must never do any of that, and
must fail at start, with the file named, rather than install or fetch something. The variables are
read once, when ``ultralytics`` is first imported, so they are set when this module is imported;
weights are always handed over as the absolute path of a file that exists, which keeps the
download-by-name paths shut; nothing here plots, so no font is ever looked up.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import cv2
import numpy as np
import numpy.typing as npt

from edge.detection.base import DetectorError, Image
from zones.tracks import Detections

if TYPE_CHECKING:
    import torch
    from ultralytics.engine.results import Results
    from ultralytics.models import YOLO

log = logging.getLogger(__name__)

# YOLO_OFFLINE: no online check, hence no usage events and no AutoUpdate attempt.
# YOLO_AUTOINSTALL: a missing requirement (onnxruntime, openvino...) is reported, not installed.
# "true"/"false" spelled out: ultralytics before 8.4 only honours YOLO_OFFLINE=true, not 1.
OFFLINE_ENV = {"YOLO_OFFLINE": "true", "YOLO_AUTOINSTALL": "false"}
os.environ.update(OFFLINE_ENV)

_CONFIG_SUFFIXES = {".yaml", ".yml"}  # Ultralytics would build a model with random weights


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0].removeprefix("ERROR ❌️").strip() if lines else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _numpy(values: torch.Tensor | npt.NDArray[Any]) -> npt.NDArray[Any]:
    return values if isinstance(values, np.ndarray) else values.detach().cpu().numpy()


# OpenCV's thread count before ultralytics changes it (all cores if it already did).
_CV2_THREADS = cv2.getNumThreads() if "ultralytics" not in sys.modules else (os.cpu_count() or 1)


def offline_ultralytics() -> None:
    """Import ``ultralytics`` offline and without its side effect on OpenCV.

    Ultralytics calls ``cv2.setNumThreads(0)`` on import (for PyTorch data loaders), which
    leaves every ``cv2.dnn`` detector in the process on one core: measured here, yolov4-tiny
    went from 12 to 7.5 frames/s. The thread count is put back. If ultralytics was imported
    before OFFLINE_ENV was set, the flags it already read are switched off.
    """
    import ultralytics.utils as ul_utils
    from ultralytics.utils import checks, events

    cv2.setNumThreads(_CV2_THREADS)
    if ul_utils.ONLINE or ul_utils.AUTOINSTALL:
        log.warning("ultralytics was imported before edge.ultra; forcing it offline")
        for module in (ul_utils, checks):
            for flag in ("ONLINE", "AUTOINSTALL"):
                setattr(module, flag, False)
        events.events.enabled = False


def _load_yolo(weights: Path) -> YOLO:
    try:
        offline_ultralytics()
        from ultralytics.models import YOLO
    except ImportError as exc:
        raise DetectorError(f"{weights}: the ultralytics back end needs the 'ultralytics' extra "
                            f"({_one_line(exc)})") from exc
    return YOLO(str(weights), task="detect")


class UltralyticsDetector:
    """Ultralytics YOLO weights (.pt, .onnx, an OpenVINO folder...) through ``ultralytics``.

    ``input_size`` is the network input (w, h) like the other back ends; PyTorch weights letterbox
    to it keeping the aspect ratio, while fixed-shape exports (ONNX, OpenVINO) always run at the
    size they were exported at, and a different ``input_size`` only logs a warning. ``nms`` is the
    IoU threshold of non-maximum suppression. The model runs once on a blank frame when built, so
    load errors surface at start and the first real frame is not slow. Not thread-safe: one
    detector per thread.
    """

    def __init__(self, weights: Path, *, input_size: tuple[int, int], classes: list[int],
                 conf: float, nms: float, device: str = "cpu", name: str = "ultralytics"):
        path = Path(weights).expanduser().resolve()
        if not path.exists():
            raise DetectorError(f"{path}: no such weights file or folder")
        if path.suffix.lower() in _CONFIG_SUFFIXES:
            raise DetectorError(f"{path}: a model config, not weights; export or train it first")
        if path.is_dir() and path.name.endswith("_openvino_model") and not any(path.glob("*.xml")):
            raise DetectorError(f"{path}: OpenVINO folder without its .xml model")
        self.weights, self.name = path, name
        self.input_size = input_size
        self.classes = np.asarray(classes, dtype=np.int64)
        self.conf, self.nms, self.device = conf, nms, device
        w, h = input_size
        self._predict_args: dict[str, Any] = {
            "imgsz": (h, w), "conf": conf, "iou": nms, "classes": list(classes),
            "device": device, "save": False, "verbose": False,
        }
        try:
            self.model = _load_yolo(path)
            self.detect(np.zeros((h, w, 3), dtype=np.uint8))  # loads non-PyTorch back ends
        except DetectorError:
            raise
        except Exception as exc:  # any failure to load is the file's: name it, in one line
            raise DetectorError(f"{path}: cannot load Ultralytics model: {_one_line(exc)}") from exc
        ran = getattr(getattr(self.model.predictor, "args", None), "imgsz", None)
        if ran is not None and list(ran) != [h, w]:  # fixed-shape exports keep their own size
            log.warning("%s: %s runs at %s (h, w), not input_size %s (w, h)", name, path.name,
                        list(ran), input_size)
        names = self.model.names
        log.info("%s: %s on %s, classes %s", name, path.name, device,
                 {int(c): names.get(int(c), "?") for c in self.classes})

    def detect(self, image: Image) -> Detections:
        h, w = image.shape[:2]
        results = cast("list[Results]", self.model.predict(image, **self._predict_args))
        boxes = results[0].boxes if results else None
        if boxes is None or len(boxes) == 0:
            return Detections.empty(frame_size=(w, h))
        cls = _numpy(boxes.cls).astype(np.int64).reshape(-1)
        keep = np.isin(cls, self.classes)  # end-to-end (NMS-free) exports may ignore `classes`
        xyxy = _numpy(boxes.xyxy).astype(np.float64).reshape(-1, 4)[keep]
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, w)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, h)
        scores = _numpy(boxes.conf).astype(np.float64).reshape(-1)[keep]
        return Detections.create(xyxy, scores, cls[keep], frame_size=(w, h))
