"""Slices around the fences: where they go, what they cost, and how people cut by a slice's
edge are merged, with a detector that only sees people above a size in its own input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.camera import build_pipeline, build_rules
from edge.config import load_config
from edge.detection.slicing import FenceSlicer, plan_slices
from zones.tracks import Detections

FRAME = (1920, 1080)


class SizeLimited:
    """Finds bright blobs, as an input of ``net`` px would show them: only those at least
    ``min_px`` tall after the resize (what a real network does with far-off people)."""

    name = "blobs"

    def __init__(self, net: tuple[int, int] = (512, 384), min_px: float = 16.0):
        self.net, self.min_px, self.calls = net, min_px, 0

    def detect(self, image: np.ndarray) -> Detections:
        self.calls += 1
        h, w = image.shape[:2]
        scale = min(self.net[0] / w, self.net[1] / h)
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        n, _, stats, _ = cv2.connectedComponentsWithStats((grey > 128).astype(np.uint8))
        boxes = [(x, y, x + bw, y + bh) for x, y, bw, bh, _ in stats[1:n]
                 if bh * scale >= self.min_px]
        arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        return Detections.create(arr, np.full(len(arr), 0.9), frame_size=(w, h))


def people(*boxes: tuple[int, int, int, int]) -> np.ndarray:
    img = np.zeros((FRAME[1], FRAME[0], 3), np.uint8)
    for x1, y1, x2, y2 in boxes:
        img[y1:y2, x1:x2] = 255
    return img


BAND = [[(0, 400), (1920, 380), (1920, 600), (0, 620)]]


def test_slices_cover_the_fence_neighbourhood_and_nothing_far_from_it() -> None:
    slices = plan_slices(BAND, FRAME, (341, 256), overlap=0.25, margin=24)
    assert all(0 <= x1 < x2 <= 1920 and 0 <= y1 < y2 <= 1080 for x1, y1, x2, y2 in slices)
    covered = np.zeros((1080, 1920), bool)
    for x1, y1, x2, y2 in slices:
        covered[y1:y2, x1:x2] = True
    assert covered[380 - 48:620 + 24].all()  # the band, 2 margins above, one below
    assert not covered[:250].any() and not covered[900:].any()
    assert 12 <= len(slices) <= 24  # about 1920x290 px at 25 % overlap: what a frame costs


def test_two_fences_that_overlap_are_sliced_once() -> None:
    one = plan_slices([[(100, 100), (400, 100), (400, 300)]], FRAME, (256, 192), 0.25, 0)
    both = plan_slices([[(100, 100), (400, 100), (400, 300)], [(150, 120), (390, 130),
                                                                 (380, 290)]],
                       FRAME, (256, 192), 0.25, 0)
    assert both == one


def test_a_small_fence_gets_one_slice_centred_on_it() -> None:
    assert plan_slices([[(1000, 500), (1010, 500), (1010, 510)]], FRAME, (256, 192), 0.25,
                       0) == [(877, 409, 1133, 601)]
    edge = plan_slices([[(0, 0), (10, 0), (10, 10)]], FRAME, (256, 192), 0.25, 0)
    assert edge == [(0, 0, 256, 192)]  # pushed inside the frame


def test_far_off_people_near_the_fence_are_found_only_through_slices() -> None:
    image = people((300, 480, 308, 500), (1500, 450, 1508, 470))  # 20 px tall at a 1920 frame
    base = SizeLimited()
    assert len(base.detect(image)) == 0  # 20 px -> 5 px at the network: missed whole-frame
    sliced = FenceSlicer(base, BAND, input_size=(512, 384), zoom=1.5, overlap=0.25, margin=24,
                         nms=0.45)
    got = sliced.detect(image)
    assert len(got) == 2, got.boxes  # each found once, though several slices overlap
    assert sorted(got.boxes[:, 0].round().tolist()) == [300, 1500]
    assert base.calls == 2 + len(sliced.slices)  # one whole-frame pass + one per slice


def test_a_person_cut_by_a_slice_edge_is_taken_from_the_slice_that_shows_them_whole() -> None:
    slicer = FenceSlicer(SizeLimited(min_px=10), BAND, input_size=(512, 384), zoom=1.5,
                         overlap=0.25, margin=24, nms=0.45)
    slices = slicer.plan(FRAME)
    x2 = slices[0][2]  # a person straddling the first slice's right edge
    got = slicer.detect(people((x2 - 6, 480, x2 + 6, 520)))
    assert got.boxes.round().tolist() == [[x2 - 6, 480, x2 + 6, 520]]


def test_people_outside_the_fence_neighbourhood_cost_nothing_extra() -> None:
    far = people((300, 60, 308, 80))  # 20 px, but high above the band
    assert len(FenceSlicer(SizeLimited(), BAND, input_size=(512, 384), zoom=1.5, overlap=0.25,
                           margin=24, nms=0.45).detect(far)) == 0


CONFIG = """\
detector: {{input_size: [512, 384], tiling: {{mode: fences, zoom: 2}}}}
cameras:
  - id: far
    source: v.avi
    zones:
      - {{id: waterline, kind: water, risk: high, polygon: {band}}}
      - {{id: plaza, kind: crowd, risk: low, polygon: [[0, 0], [1900, 0], [1900, 300]]}}
"""


def test_a_camera_slices_around_its_fences_but_not_its_crowd_zones(tmp_path: Path) -> None:
    cfg = tmp_path / "site.yaml"
    cfg.write_text(CONFIG.format(band=[list(p) for p in BAND[0]]))
    loaded = load_config(cfg)
    cam = loaded.config.cameras[0]
    pipe = build_pipeline(loaded, build_rules(loaded, 0, cam, FRAME), 10.0, SizeLimited(), [])
    assert isinstance(pipe.detector, FenceSlicer)
    assert pipe.detector.crop == (256, 192)  # 512x384 / zoom 2
    slices = pipe.detector.plan(FRAME)
    assert min(y1 for _, y1, _, _ in slices) >= 380 - 48 - 192  # nothing up in the plaza


@pytest.mark.parametrize("zoom", [0.5, 5])
def test_zoom_out_of_bounds_is_a_config_error(tmp_path: Path, zoom: float) -> None:
    cfg = tmp_path / "site.yaml"
    cfg.write_text(CONFIG.format(band=[list(p) for p in BAND[0]]).replace("zoom: 2",
                                                                         f"zoom: {zoom}"))
    with pytest.raises(Exception, match=r"detector\.tiling\.zoom"):
        load_config(cfg)
