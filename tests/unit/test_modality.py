"""A camera's modality (visible, night, thermal): how its frames reach the detector, which score
counts as a person on it, and the config that says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from common.yamlconfig import ConfigError
from edge.camera import build_pipeline, build_rules
from edge.config import load_config
from edge.detection.factory import base_conf, camera_conf
from edge.detection.modality import NIGHT_CONF, CameraDetector, for_camera, prepare
from zones.tracks import Detections

CONFIG = """\
detector: {{conf: 0.3}}
cameras:
{cameras}
"""
CAMERA = """\
  - id: {id}
    source: v.avi
    {extra}
    zones:
      - {{id: edge, kind: water, risk: high, polygon: [[0.1, 0.5], [0.4, 0.5], [0.4, 0.9]]}}
"""


def site(tmp_path: Path, *cams: tuple[str, str]) -> Path:
    p = tmp_path / "site.yaml"
    p.write_text(CONFIG.format(cameras="".join(CAMERA.format(id=i, extra=e) for i, e in cams)))
    return p


class Fixed:
    """A detector that returns the same scored boxes, and remembers the image it was shown."""

    name = "fixed"

    def __init__(self, scores: list[float]):
        self.scores = np.asarray(scores, dtype=np.float64)
        self.seen: np.ndarray | None = None

    def detect(self, image: np.ndarray) -> Detections:
        self.seen = image
        boxes = np.tile([10.0, 10.0, 20.0, 40.0], (len(self.scores), 1))
        return Detections.create(boxes, self.scores, frame_size=(image.shape[1], image.shape[0]))


def dim_frame() -> np.ndarray:
    """A dark, low-contrast frame with a faint figure: what a camera sees at night."""
    img = np.full((240, 320, 3), 20, np.uint8)
    img[60:180, 120:160] = (28, 30, 34)
    img += np.random.default_rng(0).integers(0, 3, img.shape, dtype=np.uint8)
    return img


def test_visible_frames_reach_the_detector_untouched() -> None:
    img = dim_frame()
    assert prepare(img, "visible") is img


def test_night_stretches_contrast_on_luminance_only() -> None:
    img = dim_frame()
    out = prepare(img, "night")
    assert out.shape == img.shape and out.dtype == np.uint8
    figure, ground = out[80:160, 125:155].mean(), out[10:50, 10:80].mean()
    assert figure - ground > 1.2 * (img[80:160, 125:155].mean() - img[10:50, 10:80].mean())
    assert out.std() > 1.2 * img.std()
    colour = prepare(np.dstack([img[:, :, 0], img[:, :, 1], img[:, :, 2] + 30]), "night")
    assert colour[:, :, 2].mean() > colour[:, :, 0].mean()  # a red cast stays red


@pytest.mark.parametrize("palette", ["grey", "false colour"])
def test_thermal_is_grey_in_three_channels(palette: str) -> None:
    img = dim_frame()
    if palette == "false colour":
        img[:, :, 2] = 200  # an "iron" palette's hue: temperature, not colour
    out = prepare(img, "thermal")
    assert out.shape == (240, 320, 3)
    assert np.array_equal(out[:, :, 0], out[:, :, 1]) and np.array_equal(out[:, :, 1],
                                                                          out[:, :, 2])
    hot = prepare(img, "thermal", "black-hot")
    assert hot[80:160, 125:155].mean() < hot[10:50, 10:80].mean()  # warm figure now dark


def test_black_hot_is_inverted_to_white_hot() -> None:
    warm_is_dark = np.full((64, 64), 200, np.uint8)
    warm_is_dark[20:44, 28:36] = 40  # a person, black-hot
    out = prepare(warm_is_dark, "thermal", "black-hot")
    assert out[30, 32, 0] > out[5, 5, 0]  # the person is now the bright one


@pytest.mark.parametrize(("conf", "kept"), [(0.2, 3), (0.3, 2), (0.5, 1), (0.95, 0)])
def test_a_camera_keeps_only_its_own_threshold(conf: float, kept: int) -> None:
    det = CameraDetector(Fixed([0.9, 0.35, 0.21]), modality="visible", conf=conf)
    got = det.detect(np.zeros((50, 50, 3), np.uint8))
    assert len(got) == kept and np.all(got.scores > conf)
    assert got.frame_size == (50, 50)


def test_a_visible_camera_at_the_shared_threshold_is_the_shared_detector() -> None:
    shared = Fixed([0.9])
    assert for_camera(shared, modality="visible", conf=0.3, base_conf=0.3) is shared
    night = for_camera(shared, modality="night", conf=0.3, base_conf=0.3)
    assert isinstance(night, CameraDetector)
    night.detect(dim_frame())
    assert shared.seen is not None and shared.seen.mean() > dim_frame().mean()


def test_thresholds_per_camera_and_the_shared_one(tmp_path: Path) -> None:
    loaded = load_config(site(tmp_path, ("day", ""), ("dark", "modality: night"),
                              ("heat", "modality: thermal\n    thermal_polarity: black-hot"),
                              ("strict", "conf: 0.6")))
    cams = {c.id: c for c in loaded.config.cameras}
    assert camera_conf(loaded, cams["day"]) == 0.3
    assert camera_conf(loaded, cams["dark"]) == NIGHT_CONF
    assert camera_conf(loaded, cams["heat"]) == 0.3 and cams["heat"].thermal_polarity == "black-hot"
    assert camera_conf(loaded, cams["strict"]) == 0.6
    assert base_conf(loaded) == min(0.3, NIGHT_CONF)  # the model runs at what the lowest needs


def test_the_pipeline_sees_frames_through_its_camera_modality(tmp_path: Path) -> None:
    loaded = load_config(site(tmp_path, ("dark", "modality: night")))
    cam = loaded.config.cameras[0]
    shared = Fixed([0.9, 0.1])
    pipe = build_pipeline(loaded, build_rules(loaded, 0, cam, (320, 240)), 10.0, shared, [])
    assert isinstance(pipe.detector, CameraDetector) and pipe.detector.modality == "night"
    assert len(pipe.detector.detect(dim_frame())) == 1  # 0.1 is under the night threshold


@pytest.mark.parametrize(("extra", "field", "message"), [
    ("modality: infrared", "cameras[0].modality", "'visible', 'night' or 'thermal'"),
    ("thermal_polarity: hot", "cameras[0].thermal_polarity", "'white-hot' or 'black-hot'"),
    ("conf: 1.5", "cameras[0].conf", "less than 1"),
])
def test_a_bad_modality_names_its_line(tmp_path: Path, extra: str, field: str,
                                       message: str, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = site(tmp_path, ("cam", extra))
    with pytest.raises(ConfigError):
        load_config(cfg)
    assert main(["config", "check", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"site.yaml:5: {field}" in err and message in err, err
