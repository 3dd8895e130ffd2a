"""UltralyticsDetector on weights built here from Ultralytics' own model yaml: nothing is
downloaded, the weights are random, and the checks are about plumbing (loading .pt and .onnx,
types, shapes, boxes inside the frame, the class filter, load errors naming the file, no network).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from edge.detection.base import DetectorError
from edge.detection.ultra import OFFLINE_ENV, UltralyticsDetector
from tests.support.netaudit import AUDIT_PRELUDE
from zones.tracks import Detections

pytestmark = pytest.mark.ultralytics

ultralytics = pytest.importorskip("ultralytics", reason="needs the ultralytics extra")
torch = pytest.importorskip("torch", reason="needs the ultralytics extra")

from tests.support.services import REPO_ROOT as REPO  # noqa: E402

VIDEO = REPO.parent / "shared/data/mot15/PETS09-S2L1/vtest.avi"
SIZE = (320, 320)  # network input w, h: small keeps the file quick on CPU
NC = 80  # yolo11n.yaml builds an 80-class head
PEOPLE = [0, 2]


@pytest.fixture(scope="module")
def frame() -> npt.NDArray[np.uint8]:
    if not VIDEO.is_file():
        pytest.skip(f"test footage not found: {VIDEO} (shared/ data checkout)")
    cap = cv2.VideoCapture(str(VIDEO))
    ok, image = cap.read()
    cap.release()
    if not ok:
        pytest.skip(f"cannot decode a frame from {VIDEO}")
    return np.asarray(image, dtype=np.uint8)


@pytest.fixture(scope="module")
def weights_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A YOLO11n checkpoint with random weights, saved the way Ultralytics saves trained ones."""
    torch.manual_seed(0)
    model = ultralytics.YOLO("yolo11n.yaml", task="detect")  # config packaged with ultralytics
    # Ultralytics starts every class logit at about -11.5 (a rare-object prior), so random weights
    # score ~1e-5 and always argmax to class 0. Spread the class biases instead so that many
    # classes win somewhere with real scores, which makes the class filter observable.
    for branch in model.model.model[-1].cv3:
        branch[-1].bias.data = torch.randn(branch[-1].bias.shape) * 2.0
    path: Path = tmp_path_factory.mktemp("ultra") / "random-yolo11n.pt"
    model.save(path)  # a checkpoint dict YOLO(path) reloads; torch.save(model) would not be one
    return path


@pytest.fixture(scope="module")
def weights_onnx(weights_pt: Path) -> Path:
    pytest.importorskip("onnx", reason="ONNX export needs the ultralytics extra (onnx)")
    pytest.importorskip("onnxruntime", reason="ONNX inference needs onnxruntime")
    out = ultralytics.YOLO(weights_pt).export(format="onnx", imgsz=SIZE[1], simplify=False,
                                               dynamic=False, device="cpu")
    return Path(out)


@pytest.fixture(scope="module")
def weights_openvino(weights_pt: Path) -> Path:
    pytest.importorskip("openvino", reason="OpenVINO export and inference need openvino")
    out = ultralytics.YOLO(weights_pt).export(format="openvino", imgsz=SIZE[1], dynamic=False,
                                               device="cpu")
    return Path(out)


def make(weights: Path, classes: list[int], **kw: Any) -> UltralyticsDetector:
    return UltralyticsDetector(weights, input_size=SIZE, classes=classes,
                               conf=kw.pop("conf", 0.05), nms=kw.pop("nms", 0.5), **kw)


def check_detections(det: Detections, image: npt.NDArray[np.uint8], classes: list[int]) -> None:
    h, w = image.shape[:2]
    n = len(det)
    assert n > 0, "random weights with spread class biases should produce boxes at conf 0.05"
    assert det.frame_size == (w, h)
    assert det.boxes.dtype == np.float64 and det.boxes.shape == (n, 4)
    assert det.scores.dtype == np.float64 and det.scores.shape == (n,)
    assert det.class_ids.dtype == np.int64 and det.class_ids.shape == (n,)
    assert np.all(det.track_ids == -1)
    assert np.all(det.boxes[:, [0, 2]] >= 0) and np.all(det.boxes[:, [0, 2]] <= w)
    assert np.all(det.boxes[:, [1, 3]] >= 0) and np.all(det.boxes[:, [1, 3]] <= h)
    assert np.all(det.boxes[:, 2] >= det.boxes[:, 0]) and np.all(det.boxes[:, 3] >= det.boxes[:, 1])
    assert np.all((det.scores >= 0.05) & (det.scores <= 1.0))
    assert set(det.class_ids.tolist()) <= set(classes)


def test_pt_weights_on_real_frame(weights_pt: Path, frame: npt.NDArray[np.uint8]) -> None:
    every = make(weights_pt, list(range(NC))).detect(frame)
    assert set(every.class_ids.tolist()) - set(PEOPLE), "need other classes to test the filter"

    det = make(weights_pt, PEOPLE, name="random").detect(frame)
    check_detections(det, frame, PEOPLE)
    assert len(det) < len(every)
    assert det.scores.max() <= every.scores.max()


def test_conf_is_honoured(weights_pt: Path, frame: npt.NDArray[np.uint8]) -> None:
    every = list(range(NC))
    loose = make(weights_pt, every, conf=0.05).detect(frame)
    threshold = float(np.median(loose.scores))  # each class scores about the same here
    strict = make(weights_pt, every, conf=threshold).detect(frame)
    assert 0 < len(strict) < len(loose)
    assert np.all(strict.scores >= threshold)


def test_onnx_export_on_real_frame(weights_onnx: Path, frame: npt.NDArray[np.uint8]) -> None:
    detector = make(weights_onnx, PEOPLE)
    check_detections(detector.detect(frame), frame, PEOPLE)
    # a frame of another size than the first still maps back to its own pixels
    small = np.ascontiguousarray(frame[:240, :300])
    check_detections(detector.detect(small), small, PEOPLE)


def test_openvino_folder_on_real_frame(weights_openvino: Path,
                                      frame: npt.NDArray[np.uint8]) -> None:
    assert weights_openvino.is_dir()
    check_detections(make(weights_openvino, PEOPLE).detect(frame), frame, PEOPLE)


def test_missing_weights_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(DetectorError, match="no such") as err:
        make(missing, PEOPLE)
    assert str(missing.resolve()) in str(err.value)


@pytest.mark.parametrize("name", ["x.pt", "x.onnx", "x_openvino_model", "x.yaml"])
def test_unloadable_weights_name_the_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    junk = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    if name.endswith("_openvino_model"):  # a folder without the .xml/.bin pair
        path.mkdir()
        (path / "junk.bin").write_bytes(junk)
    else:
        path.write_bytes(junk)
    with pytest.raises(DetectorError) as err:
        make(path, PEOPLE)
    message = str(err.value)
    assert str(path.resolve()) in message
    assert "\n" not in message
    assert "cannot load" in message or "config" in message or ".xml" in message


NO_NETWORK_PROBE = AUDIT_PRELUDE + """
from pathlib import Path
import numpy as np
from edge.detection.ultra import UltralyticsDetector
for weights in sys.argv[1:]:
    det = UltralyticsDetector(Path(weights), input_size=(320, 320), classes=[0], conf=0.05,
                              nms=0.5)
    det.detect(np.zeros((240, 320, 3), np.uint8))
print(json.dumps(events))
"""


def test_no_network_and_no_installs(weights_pt: Path, weights_onnx: Path, tmp_path: Path) -> None:
    """A fresh interpreter, without the offline variables set, loads and runs both files while an
    audit hook records every socket, URL and pip/uv/apt process: there must be none, and nothing
    may be written to the working directory."""
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", NO_NETWORK_PROBE, str(weights_pt),
                           str(weights_onnx)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
    assert "download" not in proc.stderr.lower() and "autoupdate" not in proc.stderr.lower()
    assert list(tmp_path.iterdir()) == []


def test_replay_end_to_end_with_site_weights(weights_pt: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A site's own .pt named in the config drives the whole pipeline through the CLI."""
    if not VIDEO.exists():
        pytest.skip(f"real footage not found at {VIDEO}")
    from cli.main import main
    from edge.config import load_config
    from edge.replay import ReplayOptions, run_replay

    cfg = tmp_path / "site.yaml"
    cfg.write_text(f"""\
detector:
  weights: {weights_pt}
  input_size: [{SIZE[0]}, {SIZE[1]}]
  conf: 0.05
  classes: {list(range(NC))}
cameras:
  - id: pets09
    source: {VIDEO}
    zones:
      - id: everywhere
        kind: restricted
        risk: high
        polygon: [[0, 0], [1, 0], [1, 1], [0, 1]]
        thresholds: {{intrusion_frames: 1}}
""")
    out = tmp_path / "alarms.jsonl"
    assert main(["replay", "--config", str(cfg), "--alarms-out", str(out), "--max-frames", "8",
                 "--no-progress", "--quiet"]) == 0
    assert "pets09: 8 frames" in capsys.readouterr().out
    stats = run_replay(load_config(cfg), ReplayOptions(max_frames=8, quiet=True, progress=False))
    assert stats.frames == 8
    assert stats.detections > 0, "random weights at conf 0.05 still produce boxes"
    assert stats.ms_per_frame("detect") > 0
    assert out.exists()


def test_importing_ultralytics_keeps_opencv_threads() -> None:
    """Ultralytics sets cv2.setNumThreads(0) on import; the cv2.dnn detectors must keep
    every core (one core made yolov4-tiny 35 % slower here)."""
    from edge.detection.ultra import _CV2_THREADS, offline_ultralytics

    cv2.setNumThreads(0)  # what a bare `import ultralytics` leaves behind
    offline_ultralytics()
    assert cv2.getNumThreads() == _CV2_THREADS >= 1
