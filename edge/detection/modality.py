"""What a camera's ``modality`` does to detection: visible, night (low light) or thermal.

Why per camera: one box often serves a daylight camera and a night or thermal one with one
model in memory; what differs is how each camera's frames are prepared for a network trained
on daylight colour photos (COCO), and which score counts as a person on that camera.

* ``visible``: the frame as it is; the detector's ``conf``.
* ``night`` (low light, lamps, IR illuminator, headlight glare): contrast-limited adaptive
  histogram equalisation (CLAHE) on the luminance only, so dark regions get their contrast back
  without blowing out lamps, and colour is left alone; the night ``conf`` default below.
* ``thermal`` (LWIR shown as grey, or through a false-colour palette): reduced to one grey
  channel (a palette's hues mean temperature, not colour), inverted when the camera is
  black-hot (people warm = bright, the polarity more like a lit figure), CLAHE as for night,
  and the grey repeated in three channels for the network. No thermal footage with ground truth
  was reachable to tune it: its ``conf`` is the detector's, and a site validates it (README).

Only the detector sees the prepared frame: evidence snapshots keep the camera's own picture.
A camera may set its own ``conf``; the shared model then runs at the lowest threshold any
camera needs and each camera keeps the detections at or above its own (exact: greedy NMS only
ever suppresses a box for a higher-scored one, so filtering afterwards equals running higher).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from edge.detection.base import Detector, Image
from zones.tracks import Detections

Modality = Literal["visible", "night", "thermal"]
Polarity = Literal["white-hot", "black-hot"]

# Chosen on synthetic low light made from PETS09 (benchmarks/night.py --tune), then measured on
# real night footage it was not chosen on (MOT17-04): benchmarks/results/night.md.
NIGHT_CONF = 0.2
CLAHE_CLIP = 2.0
CLAHE_TILES = (8, 8)


def default_conf(modality: Modality, detector_conf: float) -> float:
    """The score a person needs on a camera of this modality, unless the camera sets one."""
    return NIGHT_CONF if modality == "night" else detector_conf


def _clahe(grey: Image) -> Image:
    return np.asarray(cv2.createCLAHE(CLAHE_CLIP, CLAHE_TILES).apply(grey), dtype=np.uint8)


def prepare(image: Image, modality: Modality, polarity: Polarity = "white-hot") -> Image:
    """The frame as the detector should see it for this modality (a new array, or ``image``)."""
    if modality == "visible":
        return image
    if modality == "night":
        if image.ndim == 2:
            return np.asarray(cv2.cvtColor(_clahe(image), cv2.COLOR_GRAY2BGR), dtype=np.uint8)
        lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
        lab[:, :, 0] = _clahe(np.ascontiguousarray(lab[:, :, 0]))
        return np.asarray(cv2.cvtColor(lab, cv2.COLOR_LAB2BGR), dtype=np.uint8)
    grey = image if image.ndim == 2 else np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY),
                                                    dtype=np.uint8)
    if polarity == "black-hot":
        grey = np.asarray(255 - grey, dtype=np.uint8)
    return np.asarray(cv2.cvtColor(_clahe(grey), cv2.COLOR_GRAY2BGR), dtype=np.uint8)


class CameraDetector:
    """One camera's view of the shared detector: its modality's preparation, its threshold."""

    def __init__(self, base: Detector, *, modality: Modality, conf: float,
                 polarity: Polarity = "white-hot"):
        self.base, self.modality, self.conf, self.polarity = base, modality, conf, polarity
        self.name = f"{base.name}[{modality}]"

    def detect(self, image: Image) -> Detections:
        h, w = image.shape[:2]
        d = self.base.detect(prepare(image, self.modality, self.polarity))
        keep = d.scores > self.conf - 1e-9  # the base ran at this threshold or below
        if bool(keep.all()):
            return d
        if not keep.any():
            return Detections.empty(frame_size=(w, h))
        return Detections.create(d.boxes[keep], d.scores[keep], d.class_ids[keep],
                                 frame_size=(w, h))


def for_camera(base: Detector, *, modality: Modality, conf: float, base_conf: float,
               polarity: Polarity = "white-hot") -> Detector:
    """``base`` itself for a visible camera at the base threshold (nothing to do), else the
    camera's view of it."""
    if modality == "visible" and conf <= base_conf:
        return base
    return CameraDetector(base, modality=modality, conf=conf, polarity=polarity)
