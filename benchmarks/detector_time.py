"""Detector time per frame, each model against yolov4-tiny in the same run, interleaved.

    .venv/bin/python -m benchmarks.detector_time [--rounds 5] [--frames 20]

Why interleaved: the machine the benchmarks run on is shared, and its load swings within a
minute; timing one model after the other compares the load, not the models. Here every round
runs each variant on the same frames one after the other, so each ratio to yolov4-tiny is taken
under the same load. The CPU time per frame (all threads) is the load-independent cost; the
wall time is what a frame waits. Frames: every 8th of PETS09 (768x576), decoded beforehand.
Results: ``benchmarks/results/detector_time.{md,json}`` with the machine, date and load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from typing import Any

import cv2
import numpy as np

from benchmarks.machine import machine_info
from benchmarks.replay_bench import DATA, RESULTS
from edge.detection.base import Detector
from edge.detection.factory import build_detector
from models.registry import load_manifest

VARIANTS = {  # name: (model, input size, conf)
    "yolov4-tiny@416x320": ("yolov4-tiny", (416, 320), 0.25),
    "yolov8n@384x288": ("yolov8n", (384, 288), 0.3),
    "yolov8n@512x384": ("yolov8n", (512, 384), 0.3),
    "yolov8n@640x480": ("yolov8n", (640, 480), 0.3),
}
BASELINE = "yolov4-tiny@416x320"


def _frames(count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(DATA / "mot15/PETS09-S2L1/vtest.avi"))
    out: list[np.ndarray] = []
    index = 0
    while len(out) < count:
        ok, image = cap.read()
        if not ok:
            break
        index += 1
        if index % 8 == 1:
            out.append(np.asarray(image, dtype=np.uint8))
    cap.release()
    return out


def _time(det: Detector, frames: list[np.ndarray]) -> tuple[list[float], float]:
    """Wall ms of each frame, and the CPU ms per frame over all of them."""
    walls = []
    cpu0 = time.process_time()
    for image in frames:
        t0 = time.perf_counter()
        det.detect(image)
        walls.append(1000 * (time.perf_counter() - t0))
    return walls, 1000 * (time.process_time() - cpu0) / len(frames)


def _wide(rounds: int) -> tuple[list[np.ndarray], dict[str, Detector]]:
    """1920x1080 frames with 20 px people (``benchmarks.small_scenes``) and the whole-frame
    pass against fence slices at each zoom, around the same waterline band."""
    from benchmarks.small_scenes import band_polygon, compose, video_clip
    from edge.detection.slicing import FenceSlicer

    clip = video_clip("PETS09-S2L1", DATA / "mot15/PETS09-S2L1/vtest.avi",
                      DATA / "mot15/PETS09-S2L1/gt/gt.txt", step=4)
    frames = [compose(clip, k, 20).image for k in range(rounds)]
    v8 = build_detector(load_manifest()["yolov8n"], conf=0.3, nms=0.45, input_size=(512, 384))
    dets: dict[str, Detector] = {"1920x1080 yolov8n@512x384 whole frame": v8}
    for zoom in (1.0, 1.5, 2.0):
        dets[f"1920x1080 + fence slices x{zoom:g}"] = FenceSlicer(
            v8, [band_polygon()], input_size=(512, 384), zoom=zoom, overlap=0.25, margin=24,
            nms=0.45)
    return frames, dets


def run(rounds: int, per_round: int, wide: bool = False) -> dict[str, Any]:
    manifest = load_manifest()
    frames = _frames(rounds * per_round)
    dets: dict[str, Detector] = {name: build_detector(manifest[m], conf=c, nms=0.45,
                                                      input_size=size)
                                 for name, (m, size, c) in VARIANTS.items()}
    if wide:
        frames, dets = _wide(rounds * per_round)
    for det in dets.values():  # warm-up
        det.detect(frames[0])
    walls: dict[str, list[float]] = {n: [] for n in dets}
    cpus: dict[str, list[float]] = {n: [] for n in dets}
    for r in range(rounds):
        chunk = frames[r * per_round:(r + 1) * per_round]
        for name, det in dets.items():
            w, c = _time(det, chunk)
            walls[name] += w
            cpus[name].append(c)
    base = BASELINE if BASELINE in dets else next(iter(dets))
    base_wall = statistics.median(walls[base])
    base_cpu = statistics.median(cpus[base])
    return {name: {"wall_ms_p50": statistics.median(walls[name]),
                   "wall_ms_p90": float(np.percentile(walls[name], 90)),
                   "cpu_ms_per_frame": statistics.median(cpus[name]),
                   "wall_ratio": statistics.median(walls[name]) / base_wall,
                   "cpu_ratio": statistics.median(cpus[name]) / base_cpu}
            for name in dets}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--frames", type=int, default=20, help="frames per round")
    ap.add_argument("--wide", action="store_true", help="1920x1080 frames: the whole-frame "
                    "pass against fence slices (results: detector_time_wide.*)")
    args = ap.parse_args(argv)
    info = machine_info()
    res: dict[str, Any] = {
        "machine": info, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "threads": {"opencv": cv2.getNumThreads(), "onnxruntime": "one per core"},
        "variants": run(args.rounds, args.frames, args.wide)}
    with contextlib.suppress(OSError):
        res["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "detector_time_wide" if args.wide else "detector_time"
    (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=2))
    lines = ["# Detector time per frame (benchmarks/detector_time.py)", "",
             f"Date: {res['date']}. Machine: {info['cpu']}, {info['cores']} cores, shared with "
             f"other work: load average (1, 5, 15 min) {info['load_avg']} at the start, "
             f"{res.get('load_avg_end')} at the end. {args.rounds} rounds of {args.frames} "
             + ("1920x1080 frames of 20 px people (benchmarks/small_scenes.py), ratios to the "
                "whole-frame pass" if args.wide else "PETS09 frames (768x576), ratios to "
                "yolov4-tiny") + " in the same rounds, variants interleaved in each round. "
             "CPU ms: process CPU time per frame, all threads.", "",
             "| detector | wall ms p50 | p90 | CPU ms/frame | wall ratio | CPU ratio |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {k} | {v['wall_ms_p50']:.1f} | {v['wall_ms_p90']:.1f} | "
              f"{v['cpu_ms_per_frame']:.1f} | {v['wall_ratio']:.2f}x | {v['cpu_ratio']:.2f}x |"
              for k, v in res["variants"].items()]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
