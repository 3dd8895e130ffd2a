"""What each part of "one person, one alarm" buys, on the randomised zones.

    .venv/bin/python -m benchmarks.random_zones --save-tracks out/zone-tracks
    .venv/bin/python -m benchmarks.zone_ablation --tracks out/zone-tracks

The rules are a pure function of the tracked people, so they can be replayed alone on the
tracks one real pipeline run kept (``random_zones --save-tracks``: boxes, ids, appearance
histograms of every frame): each variant below raises exactly the alarms the pipeline would
with those settings, and is scored against the same reference. Variants add one part at a
time, from no hysteresis at all to the defaults (``zones.config``):

* ``none``: frame hysteresis only, no re-association;
* ``spot``: re-association on the spot (within one body height of where the lost track was
  last seen, no motion, no appearance): the intrusion rules before this work (tripwires
  here already hand their side over on the spot, which they did not before: the true
  before is ``random_zones_before.json``);
* ``+exit time``: an entry ends only after ``exit_seconds`` clearly out;
* ``+edge band``: out means beyond the band around the edge (tripwires re-arm beyond it);
* ``+motion``: re-association along the lost person's predicted path (default reach);
* ``+appearance``: and only to a track that looks alike: the defaults.

Also the rules' time per frame with all zones of a split at once. Results:
``benchmarks/results/zone_ablation.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import machine_info
from benchmarks.random_zones import SCENES, SPLITS, prepare, score_sets, summarise, with_zones
from benchmarks.replay_bench import RESULTS
from edge.camera import build_rules
from zones.config import HandoverConfig, HysteresisConfig, ZoneConfig
from zones.rules import NO_HANDOVER, NO_HYSTERESIS
from zones.tracks import Detections

_DEF_H, _DEF_HO = HysteresisConfig(), HandoverConfig()
_SPOT = HandoverConfig(reach_heights=1.0, predict_seconds=0.0, appearance=False)
_TIME = HysteresisConfig(band_m=0.0, band_heights=0.0, exit_seconds=_DEF_H.exit_seconds)
_MOTION = _DEF_HO.model_copy(update={"appearance": False})
VARIANTS: dict[str, tuple[HysteresisConfig, HandoverConfig]] = {
    "none": (NO_HYSTERESIS, NO_HANDOVER),
    "spot": (NO_HYSTERESIS, _SPOT),
    "+exit time": (_TIME, _SPOT),
    "+edge band": (_DEF_H, _SPOT),
    "+motion": (_DEF_H, _MOTION),
    "+appearance": (_DEF_H, _DEF_HO),
}


def load_tracks(path: Path) -> list[Detections]:
    """The frames ``random_zones.save_tracks`` wrote."""
    z = np.load(path)
    size = (int(z["size"][0]), int(z["size"][1]))
    out = []
    for i, (f, t) in enumerate(zip(z["frame"], z["time"], strict=True)):
        m = z["row_frame"] == i
        d = Detections.create(z["boxes"][m], z["scores"][m], z["class_ids"][m],
                              z["track_ids"][m], camera=str(z["camera"]), frame=int(f),
                              time=float(t), frame_size=size)
        if "appearance" in z.files:
            d = d.with_appearance(z["appearance"][m])
        out.append(d)
    return out


def _variant(zones: list[ZoneConfig], h: HysteresisConfig, ho: HandoverConfig
             ) -> list[ZoneConfig]:
    return [z.model_copy(update={"hysteresis": h, "handover": ho}) for z in zones]


def ablate(tracks_dir: Path, split: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scene in SCENES:
        loaded, gt, sets, fps, _n = prepare(scene, list(SPLITS[split]))
        frames = load_tracks(tracks_dir / f"{scene.name}.npz")
        zones = [z for zs in sets for z in zs.configs]
        rows: dict[str, Any] = {}
        for name, (h, ho) in VARIANTS.items():
            cfg = with_zones(loaded, _variant(zones, h, ho))
            rules = build_rules(cfg, 0, cfg.config.cameras[0], frames[0].frame_size)
            t0 = time.perf_counter()
            alarms = [a for f in frames for a in rules.step(f)]
            ms = 1000 * (time.perf_counter() - t0) / len(frames)
            rows[name] = {**summarise(score_sets(sets, alarms, gt, fps)),
                          "rules_ms_per_frame": ms, "zones": len(zones)}
        out[scene.name] = rows
    return out


def write_report(results: dict[str, Any], folder: Path) -> None:
    m = results["machine"]
    lines = ["# What each part buys (benchmarks/zone_ablation.py)", "",
             f"Date: {results['date']}. Machine: {m['cpu']}, {m['cores']} cores. Split: "
             f"{results['split']} seeds. Rules replayed alone on the tracks of one real "
             "pipeline run (`random_zones --save-tracks`); each row adds one part: `none` "
             "frame hysteresis only; `spot` re-association where the lost track was last seen "
             "(the intrusion rule before this work; tripwires here also hand over on the "
             "spot); `+exit time` 1 s clearly out to end an entry; `+edge band` out means "
             "beyond the band (tripwires re-arm beyond it); `+motion` along the lost "
             "person's predicted path; `+appearance` and dressed alike: the defaults. Rules "
             "time: all zones of the split at once, on a shared machine (noisy).", "",
             "| scene | variant | precision p50 | p10 | recall p50 | p10 | delay p50 | raised "
             "| matched | false alarms by cause | rules ms/frame |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for scene, rows in results["scenes"].items():
        for name, r in rows.items():
            causes = ", ".join(f"{k} {v}" for k, v in sorted(r["false_alarms"].items())) or "-"
            lines.append(
                f"| {scene} | {name} | {r['precision_p50']:.2f} | {r['precision_p10']:.2f} | "
                f"{r['recall_p50']:.2f} | {r['recall_p10']:.2f} | {r['delay_p50_of_sets']} | "
                f"{r['raised']} | {r['matched']} | {causes} | {r['rules_ms_per_frame']:.1f} |")
    (folder / "zone_ablation.md").write_text("\n".join([*lines, ""]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=Path, required=True, help="random_zones --save-tracks DIR")
    ap.add_argument("--split", choices=sorted(SPLITS), default="report")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    results = {"machine": machine_info(), "split": args.split,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "scenes": ablate(args.tracks, args.split)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "zone_ablation.json").write_text(json.dumps(results, indent=2, default=float))
    write_report(results, args.out)
    print((args.out / "zone_ablation.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
