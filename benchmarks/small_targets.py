"""Small, far-away people: detection recall and speed of the tiling options.

    .venv/bin/python -m benchmarks.small_targets --scale 0.4 --step 4

A cliff edge 200 m from the camera shows people a few dozen pixels tall. To get that from real
footage with ground truth, each PETS09 frame is shrunk by ``scale`` and placed in the middle of
a full 768x576 frame (the rest filled by reflecting the shrunk image, so the background stays
real texture); the ground-truth boxes are shrunk and moved with it. Recall counts ground-truth
people (inside the shrunk image) matched by a detection at IoU >= 0.3; precision counts
detections inside the shrunk image that match someone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import cv2
import numpy as np

from benchmarks.groundtruth import GroundTruth
from benchmarks.machine import machine_info
from benchmarks.replay_bench import DATA, REPO, RESULTS, variant_config
from benchmarks.scoring import iou
from edge.config import load_config, video_path
from edge.detection.factory import make_detector
from edge.detection.tiling import MotionDetector

VARIANTS = {"off": {"mode": "off"}, "motion": {"mode": "motion", "min_area": 60},
            "tiles 2x2": {"mode": "tiles", "grid": [2, 2]},
            "tiles 3x3": {"mode": "tiles", "grid": [3, 3]}}


def shrink(image: np.ndarray, scale: float) -> tuple[np.ndarray, tuple[int, int]]:
    h, w = image.shape[:2]
    small = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    top, left = (h - sh) // 2, (w - sw) // 2
    big = cv2.copyMakeBorder(small, top, h - sh - top, left, w - sw - left, cv2.BORDER_REFLECT)
    return np.asarray(big, dtype=np.uint8), (left, top)


def match(gt: np.ndarray, det: np.ndarray) -> int:
    used: set[int] = set()
    hits = 0
    for g in gt:
        best, bi = 0.3, -1
        for i, d in enumerate(det):
            if i not in used and (v := iou(g, d)) >= best:
                best, bi = v, i
        if bi >= 0:
            used.add(bi)
            hits += 1
    return hits


def run(scale: float, step: int) -> dict[str, Any]:
    base = load_config(REPO / "config/pets09.yaml")
    gt = GroundTruth.load(DATA / "mot15/PETS09-S2L1/gt/gt.txt", 795)
    cap = cv2.VideoCapture(str(video_path(base, 0)))
    frames: list[tuple[int, np.ndarray, tuple[int, int]]] = []
    index = 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        index += 1
        small, offset = shrink(np.asarray(image, dtype=np.uint8), scale)
        frames.append((index, small, offset))
    out: dict[str, Any] = {}
    for name, tiling in VARIANTS.items():
        det = make_detector(variant_config(base, {"tiling": tiling}))
        n_gt = n_hit = n_det = n_det_hit = 0
        heights = []
        spent = 0.0
        evaluated = 0
        for idx, img, (left, top) in frames:
            if idx % step:
                if isinstance(det, MotionDetector):
                    det.regions(img)  # the background model sees every frame, as live
                continue
            evaluated += 1
            t1 = time.perf_counter()
            d = det.detect(img)
            spent += time.perf_counter() - t1
            g = gt.frame(idx, camera="", time=0.0, frame_size=(768, 576)).boxes * scale
            g += np.array([left, top, left, top])
            heights += list(g[:, 3] - g[:, 1])
            sw, sh = 768 * scale, 576 * scale
            inner = ((d.boxes[:, 0] + d.boxes[:, 2]) / 2 >= left) & (
                (d.boxes[:, 0] + d.boxes[:, 2]) / 2 <= left + sw) & (
                (d.boxes[:, 1] + d.boxes[:, 3]) / 2 >= top) & (
                (d.boxes[:, 1] + d.boxes[:, 3]) / 2 <= top + sh)
            n_gt += len(g)
            n_hit += match(g, d.boxes)
            n_det += int(inner.sum())
            n_det_hit += match(d.boxes[inner], g)
        ms = 1000 * spent / evaluated
        out[name] = {"recall": n_hit / n_gt, "precision": n_det_hit / max(n_det, 1),
                     "ms_per_frame": ms, "frames": evaluated, "people": n_gt,
                     "median_height_px": float(np.median(heights))}
        print(name, out[name], flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.4)
    ap.add_argument("--step", type=int, default=4, help="use every n-th frame")
    args = ap.parse_args(argv)
    res = {"machine": machine_info(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "scale": args.scale, "step": args.step, "variants": run(args.scale, args.step),
           "input_size": "x".join(map(str, load_config(REPO / "config/pets09.yaml")
                                       .config.detector.input_size or (416, 416)))}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "small_targets.json").write_text(json.dumps(res, indent=2))
    m = res["machine"]
    any_v = next(iter(res["variants"].values()))
    lines = ["# Small targets: tiling options (benchmarks/small_targets.py)", "",
             f"Date: {res['date']}. Machine: {m['cpu']}, {m['cores']} cores. Detector "
             f"yolov4-tiny {res['input_size']} (config/pets09.yaml). PETS09 frames shrunk "
             f"to {args.scale:g} and reflected into a "
             f"768x576 frame (every {args.step}th frame: {any_v['frames']} frames, "
             f"{any_v['people']} people, median height {any_v['median_height_px']:.0f} px).", "",
             "Only the detector's time is counted (the motion variant's background model also "
             "sees the frames between those evaluated, as it would live).", "",
             "| tiling | recall | precision | ms/frame |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['recall']:.3f} | {v['precision']:.3f} | {v['ms_per_frame']:.0f} |"
              for k, v in res["variants"].items()]
    (RESULTS / "small_targets.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
