"""Golden-output proof, live: the torch-free YOLOv8n ONNX equals Ultralytics' own model.

Why: ``models.yolov8_onnx`` rebuilds the network from the checkpoint's raw tensors and
``edge.detection.yolo_post`` re-implements Ultralytics' pre- and post-processing; both are only
worth shipping if they give what Ultralytics gives, on real frames. Where torch is installed
(the ``ultralytics`` extra, ``make test``) this compares, at the default 512x384 input:

* the weights: every folded Conv weight and bias equals the one in Ultralytics' own ONNX export,
  bit for bit;
* the raw output ``(1, 84, N)`` on letterboxed PETS09 and TUD-Campus frames, against the
  export and against the PyTorch model (BatchNorm unfused, at run time);
* the final people: ``OnnxYoloDetector.detect`` against ``YOLO(...).predict`` on the export and
  on the ``.pt``.

Tolerances are the measured differences with headroom (0.0 against the export; about 2e-3 px
and 1e-5 in scores against PyTorch, from float32 summation order).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from edge.detection.onnx_yolo import OnnxYoloDetector
from edge.detection.yolo_post import letterbox, to_tensor
from models.registry import MODELS_DIR_ENV, load_manifest, resolve_model
from tests.support.yolov8_golden import FRAMES, read_frames

pytestmark = pytest.mark.ultralytics
os.environ.update({"YOLO_OFFLINE": "true", "YOLO_AUTOINSTALL": "false"})
torch = pytest.importorskip("torch", reason="golden outputs need torch (ultralytics extra)")
ultralytics = pytest.importorskip("ultralytics", reason="golden outputs need ultralytics")

SIZE = (512, 384)
CONF, IOU = 0.25, 0.45
TOL_TORCH_BOX_PX, TOL_TORCH_SCORE = 2e-2, 1e-4


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Ours (converted into a private folder), Ultralytics' export and the PyTorch model."""
    folder = tmp_path_factory.mktemp("golden")
    entry = load_manifest()["yolov8n"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(MODELS_DIR_ENV, str(folder))
        files = resolve_model(entry, SIZE, convert_missing=True)
    pt = folder / "yolov8n.pt"  # Ultralytics writes its export beside the weights
    pt.write_bytes(files["checkpoint"].read_bytes())
    w, h = SIZE
    theirs = Path(ultralytics.YOLO(str(pt)).export(format="onnx", imgsz=(h, w), simplify=False,
                                                  dynamic=False, device="cpu", verbose=False))
    torch_model = ultralytics.YOLO(str(pt)).model.float().eval()  # unfused: BN at run time
    yield {"ours": files["onnx"], "theirs": theirs, "pt": pt, "torch": torch_model}


@pytest.fixture(scope="module")
def frames(shared_data: Path) -> list[np.ndarray]:
    return [img for video, idx in FRAMES.items() for img in read_frames(shared_data / video, idx)]


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def test_weights_equal_ultralytics_export(models: dict[str, Any]) -> None:
    ours = {t.name: onnx.numpy_helper.to_array(t)
            for t in onnx.load(str(models["ours"])).graph.initializer}
    theirs = {t.name: onnx.numpy_helper.to_array(t)
              for t in onnx.load(str(models["theirs"])).graph.initializer}
    convs = [k for k in theirs if k.endswith((".weight", ".bias")) and theirs[k].ndim in (1, 4)]
    assert len(convs) >= 120  # yolov8n: 63 convs with bias + DFL
    for k in convs:
        np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)


def test_raw_output_matches(models: dict[str, Any], frames: list[np.ndarray]) -> None:
    ours, theirs = _session(models["ours"]), _session(models["theirs"])
    for image in frames:
        x = to_tensor(letterbox(image, SIZE)[0])
        a = ours.run(None, {"images": x})[0]
        b = theirs.run(None, {"images": x})[0]
        with torch.no_grad():
            c = models["torch"](torch.from_numpy(x))
        c = (c[0] if isinstance(c, tuple | list) else c).numpy()
        assert a.shape == b.shape == c.shape
        assert np.abs(a - b).max() <= 1e-4
        assert np.abs(a[:, :4] - c[:, :4]).max() <= TOL_TORCH_BOX_PX
        assert np.abs(a[:, 4:] - c[:, 4:]).max() <= TOL_TORCH_SCORE


def _ultra_people(model: Any, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w, h = SIZE  # rect=False: a .pt otherwise runs at the smallest multiple of 32 that fits
    res = model.predict(image, imgsz=(h, w), conf=CONF, iou=IOU, classes=[0], verbose=False,
                        device="cpu", rect=False)[0].boxes
    order = np.argsort(-res.conf.numpy(), kind="stable")
    return res.xyxy.numpy().astype(np.float64)[order], res.conf.numpy().astype(np.float64)[order]


def test_detections_identical(models: dict[str, Any], frames: list[np.ndarray]) -> None:
    det = OnnxYoloDetector(models["ours"], input_size=SIZE, classes=[0], conf=CONF, nms=IOU,
                           threads=1)
    exported = ultralytics.YOLO(str(models["theirs"]), task="detect")
    pytorch = ultralytics.YOLO(str(models["pt"]))  # predict fuses Conv+BN itself
    total = 0
    for image in frames:
        d = det.detect(image)
        order = np.argsort(-d.scores, kind="stable")
        for ref, tol_box, tol_score in ((exported, 1e-3, 1e-6),
                                        (pytorch, TOL_TORCH_BOX_PX, TOL_TORCH_SCORE)):
            rb, rs = _ultra_people(ref, image)
            assert len(rb) == len(d)
            np.testing.assert_allclose(d.boxes[order], rb, atol=tol_box, rtol=0)
            np.testing.assert_allclose(d.scores[order], rs, atol=tol_score, rtol=0)
        total += len(d)
    assert total > 3 * len(frames)  # the frames have people: the comparison is not vacuous
