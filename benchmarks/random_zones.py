"""Randomised-zone evaluation: zones a user might draw, scored against the ground truth.

    .venv/bin/python -m benchmarks.random_zones                  # every scene, every seed
    .venv/bin/python -m benchmarks.random_zones --seeds tune     # the tuning split only

For each scene with ground truth (PETS09-S2L1, TUD-Campus) every seed's zone set is drawn
(``benchmarks/zonegen.py``: polygons and tripwires where the ground truth's people walk) and
its expected alarms are derived from the ground truth (``benchmarks/reference.py``, which is
not the product's rules). Then the real pipeline runs once per scene, with the scene's config
(detector, tracker, calibration) and every zone of every set at once: zones never interact,
each rule keeps its own state, so one pass raises exactly the alarms one pass per set would,
at a twentieth of the cost. Each set is scored alone (``benchmarks/zone_score.py``); the
distribution over sets (median and 10th percentile of precision and recall, median delay) is
written per scene and split to ``benchmarks/results/random_zones.md`` and ``.json``.

``--save-tracks DIR`` also keeps every frame's tracked people (with their appearance
histograms), so that ``benchmarks.zone_ablation`` can replay the rules alone on the very same
tracks (what each part of the rules buys).
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

from benchmarks.machine import machine_info
from benchmarks.reference import Track, expected_events, load_tracks
from benchmarks.replay_bench import DATA, REPO, RESULTS, START, run_system
from benchmarks.zone_report import write_report
from benchmarks.zone_score import SetScore, score_set
from benchmarks.zonegen import REPORT_SEEDS, TUNE_SEEDS, ZoneSet, draw
from edge.config import LoadedConfig, load_config, video_path
from edge.sources.file import VideoFileSource
from zones.alarm import Alarm
from zones.config import ZoneConfig
from zones.tracks import Detections


@dataclass(frozen=True)
class Scene:
    name: str
    config: str
    gt: str


SCENES = [
    Scene("PETS09-S2L1", "config/pets09.yaml", "mot15/PETS09-S2L1/gt/gt.txt"),
    Scene("TUD-Campus", "config/tud_campus.yaml", "mot15/TUD-Campus/gt/gt.txt"),
]
SPLITS = {"tune": TUNE_SEEDS, "report": REPORT_SEEDS}


def with_zones(loaded: LoadedConfig, zones: list[ZoneConfig]) -> LoadedConfig:
    """The scene's config with its first camera's zones replaced."""
    data = loaded.config.model_dump()
    data["cameras"][0]["zones"] = [z.model_dump() for z in zones]
    return LoadedConfig(loaded.config.model_validate(data), loaded.path, loaded.lines)


def by_seed(alarms: list[Alarm], sets: list[ZoneSet]) -> dict[int, list[Alarm]]:
    """Alarms split per zone set (zone ids are ``s{seed}-...``)."""
    out: dict[int, list[Alarm]] = {zs.seed: [] for zs in sets}
    for a in alarms:
        out[int(a.zone[1:].split("-", 1)[0])].append(a)
    return out


def quantile(values: list[float], q: float) -> float:
    """The ``q``-quantile (lower interpolation: a real set's value, never an average)."""
    return float(np.quantile(values, q, method="lower")) if values else float("nan")


def summarise(scores: list[SetScore]) -> dict[str, Any]:
    """The distribution over zone sets, and the pooled counts."""
    p = [s.precision for s in scores]
    r = [s.recall for s in scores]
    d = [s.median_delay for s in scores if s.delays]
    causes: dict[str, int] = {}
    for s in scores:
        for c in s.false_causes:
            causes[c] = causes.get(c, 0) + 1
    pooled = [x for s in scores for x in s.delays]
    return {
        "sets": len(scores),
        "precision_p50": float(np.median(p)), "precision_p10": quantile(p, 0.1),
        "recall_p50": float(np.median(r)), "recall_p10": quantile(r, 0.1),
        "delay_p50_of_sets": float(np.median(d)) if d else None,
        "delay_p50_pooled": float(np.median(pooled)) if pooled else None,
        "expected": sum(s.required for s in scores), "raised": sum(s.raised for s in scores),
        "matched": sum(s.matched for s in scores), "false_alarms": causes,
    }


def _set_dict(s: SetScore) -> dict[str, Any]:
    return {"seed": s.seed, "expected": s.required, "raised": s.raised, "matched": s.matched,
            "precision": s.precision, "recall": s.recall, "delay_p50": s.median_delay,
            "false_alarms": [{"zone": a.zone, "frame": a.frame, "track": a.track_id,
                              "line": a.evidence.line, "cause": c}
                             for a, c in zip(s.false_alarms, s.false_causes, strict=True)],
            "missed": [{"zone": e.zone, "frame": e.frame, "track": e.track, "line": e.line}
                       for e in s.missed]}


def prepare(scene: Scene, seeds: list[int]) -> tuple[LoadedConfig, dict[int, Track],
                                                       list[ZoneSet], float, int]:
    """The scene's config with every set's zones, its ground truth, sets, fps and frames."""
    base = load_config(REPO / scene.config)
    cam = base.config.cameras[0]
    probe = VideoFileSource(video_path(base, 0), start_time=START, fps=cam.fps)
    size, fps, n = probe.size, probe.fps, probe.frame_count
    probe.close()
    tracks = load_tracks(DATA / scene.gt, size)
    sets = [draw(scene.name, seed, tracks, size) for seed in seeds]
    loaded = with_zones(base, [z for zs in sets for z in zs.configs])
    return loaded, tracks, sets, fps, n


def score_sets(sets: list[ZoneSet], alarms: list[Alarm], tracks: dict[int, Track],
               fps: float) -> list[SetScore]:
    split = by_seed(alarms, sets)
    return [score_set(zs.seed, split[zs.seed],
                      expected_events(zs.polygons, zs.lines, tracks, fps), tracks)
            for zs in sets]


def save_tracks(path: Path, frames: list[Detections]) -> None:
    """Every frame's tracked people in one ``.npz`` (rows tagged with their frame)."""
    idx = np.concatenate([np.full(len(f), i) for i, f in enumerate(frames)] or [np.zeros(0)])
    cat = np.concatenate
    looks = [f.appearance for f in frames if f.appearance is not None]
    arrays: dict[str, Any] = {
        "row_frame": idx.astype(np.int64),
        "boxes": cat([f.boxes for f in frames]), "scores": cat([f.scores for f in frames]),
        "class_ids": cat([f.class_ids for f in frames]),
        "track_ids": cat([f.track_ids for f in frames]),
        "frame": np.array([f.frame for f in frames]), "time": np.array([f.time for f in frames]),
        "size": np.array(frames[0].frame_size if frames else (0, 0)),
        "camera": np.array(frames[0].camera if frames else "")}
    if frames and len(looks) == len(frames) and len({a.shape[1] for a in looks}) == 1:
        arrays["appearance"] = cat(looks)
    np.savez_compressed(path, **arrays)


def bench_scene(scene: Scene, seeds: list[int], save: Path | None) -> dict[str, Any]:
    loaded, tracks, sets, fps, n = prepare(scene, seeds)
    stats, rec, _rules = run_system(loaded, f"{scene.name} {len(sets)} zone sets")
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        save_tracks(save / f"{scene.name}.npz", rec.tracks)
    scores = score_sets(sets, rec.alarms, tracks, fps)
    by = {s.seed: s for s in scores}
    out: dict[str, Any] = {
        "frames": n, "fps": fps, "zones": sum(len(zs.configs) for zs in sets),
        "pipeline_fps": stats.fps,
        "ms_per_frame": {k: stats.ms_per_frame(k) for k in stats.stage_s},
        "appearance_ms_per_frame": 1000.0 * stats.appearance_s / max(stats.frames, 1),
        "people_per_frame": sum(len(f) for f in rec.tracks) / max(len(rec.tracks), 1),
        "splits": {}, "sets": [_set_dict(s) for s in scores]}
    for name, split in SPLITS.items():
        chosen = [by[s] for s in split if s in by]
        if chosen:
            out["splits"][name] = summarise(chosen)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", choices=["all", *SPLITS], default="all")
    ap.add_argument("--save-tracks", type=Path, help="keep the tracks here for ablations")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = ap.parse_args(argv)
    if not DATA.exists():
        print(f"benchmark data not found at {DATA} (see ../shared/data/README.md)")
        return 2
    seeds = [*TUNE_SEEDS, *REPORT_SEEDS] if args.seeds == "all" else list(SPLITS[args.seeds])
    t0 = time.time()
    results: dict[str, Any] = {
        "machine": machine_info(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "tune_seeds": list(TUNE_SEEDS), "report_seeds": list(REPORT_SEEDS),
        "scenes": {s.name: bench_scene(s, seeds, args.save_tracks) for s in SCENES}}
    results["bench_wall_s"] = time.time() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "random_zones.json").write_text(json.dumps(results, indent=2, default=float))
    write_report(results, args.out)
    print((args.out / "random_zones.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
