"""What the pipeline needs from a detector: an image in, ``Detections`` of people out.

Back ends (``edge.detection.onnx_yolo``: YOLOv8n, the default, through onnxruntime;
``edge.detection.opencv``: yolov4-tiny and SSD-MobileNetV2 through ``cv2.dnn``;
``edge.detection.ultra``: Ultralytics YOLO) implement ``Detector``; ``edge.detection.factory``
builds the one a config names, after the models manifest has checksummed its files.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from zones.tracks import Detections

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


def clip_boxes(boxes: npt.NDArray[np.float64], w: int, h: int) -> npt.NDArray[np.float64]:
    """Boxes (x1, y1, x2, y2) clipped to a w x h image, in place."""
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return boxes
