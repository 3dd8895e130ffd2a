"""Record Ultralytics' own YOLOv8n detections on real frames: the torch-free golden reference.

    .venv/bin/python -m tests.support.yolov8_golden     # needs the ultralytics extra (torch)

Why: an edge box converts the checkpoint itself and has no torch to compare against, so what
Ultralytics' PyTorch pipeline finds on a few PETS09 and TUD-Campus frames is recorded once,
here, into ``tests/golden/yolov8n-512x384.json``; ``tests/unit/test_yolov8_onnx.py`` checks the
box's converted model and detector against it (``tests/unit/test_yolov8_golden.py`` repeats the
comparison live where torch is installed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.registry import load_manifest, verify

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "yolov8n-512x384.json"
SIZE = (512, 384)  # (w, h): the default input
CONF, IOU = 0.25, 0.45
FRAMES = {"mot15/PETS09-S2L1/vtest.avi": [1, 100, 300, 500, 700, 795],
          "mot15/TUD-Campus/TUD-Campus.mp4": [1, 35, 71]}


def read_frames(video: Path, wanted: list[int]) -> list[np.ndarray]:
    """Frames by 1-based index, decoded in order (as the replay decodes them)."""
    cap = cv2.VideoCapture(str(video))
    out, index = [], 0
    while len(out) < len(wanted):
        ok, image = cap.read()
        if not ok:
            break
        index += 1
        if index in wanted:
            out.append(np.asarray(image, dtype=np.uint8))
    cap.release()
    return out


def checkpoint() -> Path:
    """The pinned yolov8n.pt from the installed registry package, sha256 checked."""
    entry = load_manifest()["yolov8n"]
    return verify(entry.files["checkpoint"])


def record(data: Path) -> dict[str, Any]:
    os.environ.update({"YOLO_OFFLINE": "true", "YOLO_AUTOINSTALL": "false"})
    from ultralytics import YOLO

    model = YOLO(str(checkpoint()))
    w, h = SIZE
    cases = []
    for video, wanted in FRAMES.items():
        for index, image in zip(wanted, read_frames(data / video, wanted), strict=True):
            # rect=False: a .pt otherwise runs at the smallest multiple of 32 that fits
            res = model.predict(image, imgsz=(h, w), conf=CONF, iou=IOU, classes=[0],
                                verbose=False, device="cpu", rect=False)[0].boxes
            order = np.argsort(-res.conf.numpy(), kind="stable")
            cases.append({"video": video, "frame": index,
                          "boxes": res.xyxy.numpy()[order].astype(float).tolist(),
                          "scores": res.conf.numpy()[order].astype(float).tolist()})
    return {"what": "YOLO(yolov8n.pt).predict(rect=False), ultralytics "
                    f"{__import__('ultralytics').__version__}", "size": list(SIZE),
            "conf": CONF, "iou": IOU, "cases": cases}


if __name__ == "__main__":
    result = record(REPO.parent / "shared" / "data")
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(result, indent=1) + "\n")
    n = sum(len(c["scores"]) for c in result["cases"])
    print(f"{GOLDEN}: {n} people in {len(result['cases'])} frames")
