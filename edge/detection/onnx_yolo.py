"""YOLOv8 (Ultralytics' ONNX layout) as a person detector, run by onnxruntime: no torch.

Why: the default detector is YOLOv8n converted on the box from the pinned checkpoint
(``models.yolov8_onnx``); once converted it is a plain ONNX graph, and onnxruntime runs it at
about half yolov4-tiny's time on the same cores (``benchmarks/results/replay.md``). The pre-
and post-processing (``edge.detection.yolo_post``) are Ultralytics', so the detections are the
ones ``YOLO(...).predict`` gives. The same class runs an Ultralytics ``export(format="onnx")``.

onnxruntime's worker threads busy-wait between operators by default. On a 2-core box that
also decodes video and tracks, the spinning thread takes the core the other work needs
(measured at 2 threads, 512x384: 65 ms a frame spinning, 34 ms not), so spinning is off.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.detection.base import DetectorError, Image
from edge.detection.yolo_post import letterbox, postprocess, to_tensor
from zones.tracks import Detections

log = logging.getLogger(__name__)


def _session(path: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or 0  # 0: one per core
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # warnings about unused initializers are not the site's
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxYoloDetector:
    """A YOLOv8-layout ONNX file (``(1, 3, H, W)`` in, ``(1, 4 + nc, N)`` out) as a ``Detector``.

    ``input_size`` is the network input (w, h) like the other back ends; the size is fixed in
    the file, and a different one is an error naming the file (convert at that size), never a
    silent resize. ``conf``: score threshold (strictly above, as Ultralytics); ``nms``: IoU
    above which a lower-scored box of the same class is dropped; ``classes`` are kept after
    each box's best class is picked. The model runs once on a blank frame when built, so a bad
    file fails at start and the first real frame is not slow. Not thread-safe: one per thread.
    """

    def __init__(self, path: Path, *, input_size: tuple[int, int] | None, classes: list[int],
                 conf: float, nms: float, threads: int | None = None, name: str = "yolov8n"):
        path = Path(path).expanduser().resolve()
        if not path.is_file():
            raise DetectorError(f"{path}: no such ONNX file")
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise DetectorError(f"{path}: onnxruntime is not installed ({exc}); run "
                                f"deploy/setup.sh") from exc
        try:
            self.session: Any = _session(path, threads)
        except Exception as exc:  # any failure to load is the file's: name it, in one line
            first = (str(exc).strip().splitlines() or [""])[0]
            raise DetectorError(f"{path}: cannot load ONNX model: {type(exc).__name__}: "
                                f"{first}") from exc
        inp = self.session.get_inputs()[0]
        shape = tuple(d if isinstance(d, int) else -1 for d in inp.shape)
        if len(shape) != 4 or shape[:2] != (1, 3) or min(shape[2:]) <= 0:
            raise DetectorError(f"{path}: input shape {shape}, expected fixed (1, 3, H, W)")
        file_size = (shape[3], shape[2])
        if input_size is not None and tuple(input_size) != file_size:
            raise DetectorError(f"{path}: the network input is {file_size[0]}x{file_size[1]} "
                                f"(fixed in the file), not {input_size[0]}x{input_size[1]}; "
                                f"convert the weights at that size")
        self.path, self.name, self.input_name = path, name, str(inp.name)
        self.input_size: tuple[int, int] = file_size
        self.conf, self.nms = float(conf), float(nms)
        self.classes = np.asarray(classes, dtype=np.int64)
        out = self.infer(np.zeros((1, 3, shape[2], shape[3]), dtype=np.float32))
        if out.ndim != 3 or out.shape[0] != 1 or out.shape[1] <= 4:
            raise DetectorError(f"{path}: output shape {out.shape}, expected (1, 4 + nc, N)")
        log.info("%s: %s with onnxruntime, input %dx%d, %d classes", name, path.name,
                 *file_size, out.shape[1] - 4)

    def infer(self, tensor: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The raw network output for an already letterboxed tensor (tests compare it)."""
        out = self.session.run(None, {self.input_name: tensor})
        return np.asarray(out[0], dtype=np.float32)

    def detect(self, image: Image) -> Detections:
        """People in one BGR image, xyxy in that image's pixels (camera and frame unset)."""
        h, w = image.shape[:2]
        boxed, geometry = letterbox(image, self.input_size)
        xyxy, scores, class_ids = postprocess(self.infer(to_tensor(boxed)), conf=self.conf,
                                              iou=self.nms, classes=self.classes, box=geometry,
                                              frame_size=(w, h))
        if len(xyxy) == 0:
            return Detections.empty(frame_size=(w, h))
        return Detections.create(xyxy, scores, class_ids, frame_size=(w, h))
