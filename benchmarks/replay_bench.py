"""Scored replays of real footage: every alarm checked against the ground truth.

    .venv/bin/python -m benchmarks.replay_bench              # all sequences and variants
    .venv/bin/python -m benchmarks.replay_bench --quick      # default detector only

For each sequence and detector variant the whole edge pipeline runs in process (decode,
detect, track, rules, sinks), then: per-rule precision, recall and delay against the alarms
the same rules raise on ground-truth tracks; crowd-count MAE and density error per zone;
frames/s, time per stage and peak RSS. Beside it, on the very same tracks, what a user would
script with supervision ``PolygonZone`` and Ultralytics ``solutions``. Results go to
``benchmarks/results/replay.md`` and ``replay.json`` with the machine and date, and a plot.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.alternatives import supervision_polygonzone
from benchmarks.groundtruth import GroundTruth, expected_alarms
from benchmarks.machine import machine_info
from benchmarks.scoring import RuleScore, score
from edge.camera import build_pipeline, build_rules
from edge.config import LoadedConfig, load_config, video_path
from edge.detection.factory import make_detector
from edge.pipeline import RunStats, peak_rss_mb
from edge.sources.file import VideoFileSource, prefetch
from zones.alarm import Alarm, AlarmKind
from zones.engine import CameraRules
from zones.tracks import Detections

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
START = 1795852800.0  # 2026-11-28 08:00 UTC: a Saturday morning, no period in force


@dataclass(frozen=True)
class Sequence:
    name: str
    config: str
    gt: str


SEQUENCES = [
    Sequence("PETS09-S2L1", "config/pets09.yaml", "mot15/PETS09-S2L1/gt/gt.txt"),
    Sequence("TUD-Campus", "config/tud_campus.yaml", "mot15/TUD-Campus/gt/gt.txt"),
]
# Each variant names its whole detector, so it does not depend on the configs' defaults.
V4 = {"model": "yolov4-tiny", "input_size": [416, 320], "conf": 0.25}
V8 = {"model": "yolov8n", "input_size": [512, 384], "conf": 0.3}
VARIANTS: dict[str, dict[str, Any]] = {
    "yolov8n": V8,
    "yolov8n@384x288": {**V8, "input_size": [384, 288]},
    "yolov8n@640x480": {**V8, "input_size": [640, 480]},
    "yolov4-tiny": V4,
    "yolov4-tiny@416x416": {**V4, "input_size": [416, 416]},
    "yolov4-tiny+motion": {**V4, "tiling": {"mode": "motion"}},
    "yolov4-tiny+tiles2x2": {**V4, "tiling": {"mode": "tiles", "grid": [2, 2]}},
    "ssd-mobilenet-v2": {"model": "ssd-mobilenet-v2", "input_size": None, "conf": 0.3},
}


def variant_config(loaded: LoadedConfig, overrides: dict[str, Any]) -> LoadedConfig:
    det = loaded.config.detector.model_dump()
    det.update(overrides)
    cfg = loaded.config.model_validate({**loaded.config.model_dump(), "detector": det})
    return LoadedConfig(cfg, loaded.path, loaded.lines)


class _Recorder:
    """Keeps every frame's tracks for counting and for the alternatives."""

    def __init__(self) -> None:
        self.alarms: list[Alarm] = []
        self.tracks: list[Detections] = []


def run_system(loaded: LoadedConfig, label: str) -> tuple[RunStats, _Recorder, CameraRules]:
    cam = loaded.config.cameras[0]
    source = VideoFileSource(video_path(loaded, 0), start_time=START, fps=cam.fps)
    rules = build_rules(loaded, 0, cam, source.size)
    pipe = build_pipeline(loaded, rules, source.fps, make_detector(loaded), [])
    rec = _Recorder()
    bar = tqdm(total=source.frame_count, desc=label, unit="frame", file=sys.stderr)

    def on_frame(_frame: object, events: list[Alarm]) -> None:
        rec.alarms.extend(events)
        assert pipe.last_tracks is not None
        rec.tracks.append(pipe.last_tracks)
        bar.update(1)

    stats = pipe.run(prefetch(source.frames()), on_frame)
    bar.close()
    source.close()
    return stats, rec, rules


def zone_counts(rules: CameraRules, frames: list[Detections]) -> dict[str, np.ndarray]:
    return {z.fence.id: np.array([int(z.fence.contains(f.foot_points).sum()) for f in frames])
            for z in rules.zones}


def crowd_errors(rules: CameraRules, sys_counts: dict[str, np.ndarray],
                 gt_counts: dict[str, np.ndarray]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for z in rules.zones:
        if "crowd_density" not in z.config.active_rules:
            continue
        err = np.abs(sys_counts[z.fence.id] - gt_counts[z.fence.id])
        out[z.fence.id] = {
            "count_mae": float(err.mean()), "gt_mean_count": float(gt_counts[z.fence.id].mean()),
            "area_m2": z.area_m2,
            "density_mae_per_m2": float(err.mean() / z.area_m2) if z.area_m2 else None,
        }
    return out


def score_all(system: list[Alarm], expected: list[Alarm], gt: list[Detections]
              ) -> dict[str, RuleScore]:
    kinds = {a.kind for a in expected} | {a.kind for a in system}
    return {k.value: score(k, system, expected, gt) for k in sorted(kinds)}


def bench_sequence(seq: Sequence, variants: list[str]) -> dict[str, Any]:
    base = load_config(REPO / seq.config)
    cam = base.config.cameras[0]
    probe = VideoFileSource(video_path(base, 0), start_time=START, fps=cam.fps)
    size, fps, n = probe.size, probe.fps, probe.frame_count
    probe.close()
    gt = GroundTruth.load(DATA / seq.gt, n)
    gt_frames = gt.frames(camera=cam.id, start_time=START, fps=fps, frame_size=size)
    gt_rules = build_rules(base, 0, cam, size)
    expected = expected_alarms(gt_rules, gt_frames)
    gt_counts = zone_counts(gt_rules, gt_frames)
    out: dict[str, Any] = {"frames": n, "fps": fps, "size": size, "variants": {}}
    for name in variants:
        loaded = variant_config(base, VARIANTS[name])
        stats, rec, rules = run_system(loaded, f"{seq.name} {name}")
        scores = score_all(rec.alarms, expected, gt_frames)
        detect_ms = stats.ms_per_frame("detect")
        rest_ms = sum(stats.ms_per_frame(s) for s in stats.stage_s if s != "detect")
        entry: dict[str, Any] = {
            "fps": stats.fps, "ms_per_frame": {s: stats.ms_per_frame(s) for s in stats.stage_s},
            "non_inference_share": rest_ms / detect_ms if detect_ms else None,
            "peak_rss_mb": peak_rss_mb(),
            "rules": {k: _score_dict(v, fps) for k, v in scores.items()},
            "crowd": crowd_errors(rules, zone_counts(rules, rec.tracks), gt_counts),
        }
        if name == variants[0]:
            sv_alarms, sv_counts = supervision_polygonzone(rules, rec.tracks)
            entry["alternatives"] = {"supervision PolygonZone": {
                "rules": {k: _score_dict(v, fps) for k, v in
                          score_all(sv_alarms, expected, gt_frames).items()
                          if k == AlarmKind.INTRUSION.value},
                "crowd": crowd_errors(rules, {k: np.array(v) for k, v in sv_counts.items()},
                                      gt_counts)}}
            entry["alternatives"].update(_ultralytics_alternative(rules, rec.tracks, expected,
                                                                  gt_frames, gt_counts, fps))
        out["variants"][name] = entry
    return out


def _ultralytics_alternative(rules: CameraRules, tracks: list[Detections],
                             expected: list[Alarm], gt_frames: list[Detections],
                             gt_counts: dict[str, np.ndarray], fps: float) -> dict[str, Any]:
    try:
        from benchmarks.ultralytics_alt import ultralytics_regioncounter
    except ImportError as exc:
        return {"Ultralytics solutions": {"skipped": str(exc)}}
    alarms, counts = ultralytics_regioncounter(rules, tracks)
    return {"Ultralytics solutions": {
        "rules": {k: _score_dict(v, fps) for k, v in score_all(alarms, expected, gt_frames).items()
                  if k == AlarmKind.INTRUSION.value},
        "crowd": crowd_errors(rules, {k: np.array(v) for k, v in counts.items()}, gt_counts)}}


def _score_dict(s: RuleScore, fps: float) -> dict[str, Any]:
    return {"expected": s.expected, "raised": s.raised, "matched": s.matched,
            "precision": s.precision, "recall": s.recall,
            "delay_frames_p50": s.delay(50), "delay_frames_p95": s.delay(95),
            "delay_s_p50": s.delay(50) / fps, "delay_s_p95": s.delay(95) / fps}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="default detector only")
    ap.add_argument("--variants", nargs="*", choices=sorted(VARIANTS),
                    help="measure only these and merge them into the committed results")
    args = ap.parse_args(argv)
    if not DATA.exists():
        print(f"benchmark data not found at {DATA} (see ../shared/data/README.md)")
        return 2
    variants = args.variants or (["yolov4-tiny"] if args.quick else list(VARIANTS))
    t0 = time.time()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results: dict[str, Any] = {
        "machine": machine_info(), "date": date,
        "sequences": {s.name: bench_sequence(s, variants) for s in SEQUENCES}}
    results["bench_wall_s"] = time.time() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    previous = RESULTS / "replay.json"
    if args.variants and previous.exists():
        # Re-measured variants replace theirs in the committed results; the rest are kept.
        old = json.loads(previous.read_text())
        for name, seq in results["sequences"].items():
            kept = old["sequences"].get(name, {}).get("variants", {})
            seq["variants"] = {**kept, **seq["variants"]}
        results["date"] = f"{old['date']}; re-measured {', '.join(variants)}: {date}"
    previous.write_text(json.dumps(results, indent=2, default=float))
    from benchmarks.report import write_report

    write_report(results, RESULTS)
    print((RESULTS / "replay.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
