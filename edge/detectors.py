"""Person detectors behind one interface: image in, ``Detections`` of people out.

Back ends: OpenCV DNN with the COCO weights that registry packages ship (yolov4-tiny Darknet,
SSD-MobileNetV2 TensorFlow) and Ultralytics YOLO with any weights file a site supplies
(``edge.ultra``). ``build_detector`` picks one from the config; the models manifest resolves
and checksums the files before anything loads them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from models.registry import ModelEntry, resolve_model
from zones.tracks import Detections

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]


class DetectorError(RuntimeError):
    """A model that cannot be loaded or run; the message names the file."""


class Detector(Protocol):
    """What the pipeline needs from a detector."""

    name: str

    def detect(self, image: Image) -> Detections:
        """People in one BGR image, boxes in that image's pixels (camera and frame unset)."""
        ...


class NoDetector:
    """A radar-only site has no camera: no model is loaded, and nothing calls this."""

    name = "none"

    def detect(self, image: Image) -> Detections:
        raise DetectorError("this site has no camera; nothing should ask for detections")


def _clip(boxes: npt.NDArray[np.float64], w: int, h: int) -> npt.NDArray[np.float64]:
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return boxes


class DarknetDetector:
    """YOLO Darknet (.cfg + .weights) through ``cv2.dnn``; yolov4-tiny COCO by default."""

    def __init__(self, cfg: Path, weights: Path, *, input_size: tuple[int, int],
                 classes: list[int], conf: float, nms: float, name: str = "yolov4-tiny"):
        try:
            net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
        except cv2.error as exc:
            raise DetectorError(f"{weights}: cannot load Darknet model: {exc.msg}") from exc
        self.model = cv2.dnn.DetectionModel(net)
        self.model.setInputParams(scale=1 / 255.0, size=input_size, swapRB=True)
        self.classes = np.asarray(classes, dtype=np.int64)
        self.conf, self.nms, self.name = conf, nms, name

    def detect(self, image: Image) -> Detections:
        raw_ids, scores, boxes = self.model.detect(image, self.conf, self.nms)
        class_ids = np.asarray(raw_ids, dtype=np.int64).reshape(-1)
        keep = np.isin(class_ids, self.classes)
        xywh = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[keep]
        xyxy = np.column_stack((xywh[:, :2], xywh[:, :2] + xywh[:, 2:]))
        h, w = image.shape[:2]
        return Detections.create(_clip(xyxy, w, h),
                                 np.asarray(scores, dtype=np.float64).reshape(-1)[keep],
                                 class_ids[keep], frame_size=(w, h))


class TensorflowSSDDetector:
    """SSD-MobileNetV2 COCO (frozen TensorFlow graph) through ``cv2.dnn``.

    The graph's class ids are 1-based COCO (person = 1); they are mapped to the 0-based ids the
    rest of the pipeline and the YOLO models use (person = 0).
    """

    def __init__(self, pb: Path, pbtxt: Path, *, input_size: tuple[int, int],
                 classes: list[int], conf: float, name: str = "ssd-mobilenet-v2"):
        try:
            self.net = cv2.dnn.readNetFromTensorflow(str(pb), str(pbtxt))
        except cv2.error as exc:
            raise DetectorError(f"{pb}: cannot load TensorFlow model: {exc.msg}") from exc
        self.input_size, self.conf, self.name = input_size, conf, name
        self.classes = np.asarray(classes, dtype=np.int64)

    def detect(self, image: Image) -> Detections:
        h, w = image.shape[:2]
        blob = cv2.dnn.blobFromImage(image, size=self.input_size, swapRB=True)
        self.net.setInput(blob)
        out = np.asarray(self.net.forward(), dtype=np.float64).reshape(-1, 7)
        cls = out[:, 1].astype(np.int64) - 1
        keep = (out[:, 2] >= self.conf) & np.isin(cls, self.classes)
        out = out[keep]
        xyxy = out[:, 3:7] * np.array([w, h, w, h], dtype=np.float64)
        return Detections.create(_clip(xyxy, w, h), out[:, 2], cls[keep], frame_size=(w, h))


def build_detector(entry: ModelEntry, *, conf: float, nms: float,
                   input_size: tuple[int, int] | None = None,
                   device: str = "cpu") -> Detector:
    """Instantiate the back end a manifest entry names, after verifying its files."""
    files = resolve_model(entry)
    size = input_size or entry.input_size
    classes = entry.person_classes
    if entry.backend == "opencv-darknet":
        return DarknetDetector(files["cfg"], files["weights"], input_size=size, classes=classes,
                               conf=conf, nms=nms, name=entry.name)
    if entry.backend == "opencv-tensorflow":
        return TensorflowSSDDetector(files["weights"], files["config"], input_size=size,
                                     classes=classes, conf=conf, name=entry.name)
    if entry.backend == "ultralytics":
        from edge.ultra import UltralyticsDetector

        return UltralyticsDetector(files["weights"], input_size=size, classes=classes,
                                   conf=conf, nms=nms, device=device, name=entry.name)
    raise DetectorError(f"model {entry.name}: unknown backend {entry.backend!r}")
