"""The frame step computes people's colour histograms only when a zone re-associates by looks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge.appearance import DIM
from edge.pipeline import CameraPipeline
from edge.sources.frame import Frame
from zones.config import HandoverConfig, ZoneConfig
from zones.engine import CameraRules
from zones.geometry import ZoneKind
from zones.profiles import Schedule
from zones.tracks import Detections


class OnePerson:
    """Detector and tracker in one: a person at the same box, track 7, every frame."""

    def detect(self, image: np.ndarray) -> Detections:
        return Detections.create([[40.0, 20.0, 60.0, 80.0]])

    def update(self, dets: Detections) -> Detections:
        return dets.with_tracks(dets.boxes, dets.scores, dets.class_ids, np.array([7]))

    def predict(self, frame: int, t: float) -> Detections:
        raise AssertionError("every frame is a detection frame here")


@pytest.mark.parametrize(("handover", "computed"), [
    (HandoverConfig(), True), (HandoverConfig(appearance=False), False),
    (HandoverConfig(reach_heights=0.0), False)])
def test_histograms_only_where_asked(handover: HandoverConfig, computed: bool) -> None:
    zone = ZoneConfig(id="z", kind=ZoneKind.CLIFF, coords="pixels", handover=handover,
                      polygon=[(0.0, 0.0), (100.0, 0.0), (100.0, 100.0), (0.0, 100.0)])
    rules = CameraRules("c", [zone], (100, 100), Schedule([]))
    person: Any = OnePerson()
    pipe = CameraPipeline("c", person, person, rules, [])
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    image[20:80, 40:60] = (0, 0, 200)
    for i in range(1, 4):
        pipe.step(Frame(i, 1000.0 + i / 10, image))
    assert pipe.last_tracks is not None
    app = pipe.last_tracks.appearance
    assert (app is not None) is computed
    if app is not None:
        assert app.shape == (1, DIM) and app.any()
    assert (pipe.stats.appearance_s > 0) is computed
