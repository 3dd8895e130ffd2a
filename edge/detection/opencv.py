"""COCO detectors that registry packages ship, run by OpenCV's DNN module (no torch).

yolov4-tiny (Darknet ``.cfg`` + ``.weights``) and SSD-MobileNetV2 (a frozen
TensorFlow graph); ``edge.detection.factory`` builds them from the models manifest.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.detection.base import DetectorError, Image, clip_boxes
from zones.tracks import Detections


class DarknetDetector:
    """YOLO Darknet (.cfg + .weights) through ``cv2.dnn``: yolov4-tiny COCO."""

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
        return Detections.create(clip_boxes(xyxy, w, h),
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
        return Detections.create(clip_boxes(xyxy, w, h), out[:, 2], cls[keep], frame_size=(w, h))
