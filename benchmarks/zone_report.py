"""Turns ``random_zones.json`` into the committed table (``random_zones.md``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from benchmarks import reference, zonegen

GOAL = "median precision and recall >= 0.95, 10th percentile >= 0.85, median delay <= 3 frames"


def _f(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _method() -> list[str]:
    return [
        f"Zone sets: {zonegen.POLYGONS} polygons and {zonegen.TRIPWIRES} tripwires per seed, "
        "drawn where the ground truth's people walk (`benchmarks/zonegen.py`), all `risk: "
        f"high`. Seeds {zonegen.TUNE_SEEDS[0]}-{zonegen.TUNE_SEEDS[-1]} are the tuning split, "
        f"{zonegen.REPORT_SEEDS[0]}-{zonegen.REPORT_SEEDS[-1]} the held-out report split.",
        "",
        "Expected alarms: `benchmarks/reference.py`, a fixed definition on the ground truth, "
        "not the product's rules: an entry is the first frame a track's foot point is inside "
        f"a polygon after {reference.REARM_S:g} s outside; a crossing is a change of the foot "
        "point's side of a tripwire between two frames, between its endpoints (towards `into` "
        f"when set). Don't-care events (visits under {reference.MIN_VISIT_S:g} s, MOT "
        f"`conf 0` rows, re-crossings within {reference.REARM_S:g} s) are neither missed nor "
        "false when alarmed. An alarm matches when zone, kind and tripwire agree, it is raised "
        f"from {reference.EARLY_S:g} s before the entry to the end of the visit (crossings: "
        f"within {reference.LINE_WINDOW_S:g} s) and its box overlaps the person's (IoU >= 0.3)."
        " False alarms by cause: `repeat` (a second alarm for one entry), `outside` (the "
        "person is there but by the ground truth not in the zone), `no person`.",
        "",
        "The real pipeline (the scene's config: detector, tracker, calibration) runs once per "
        "scene with every set's zones at once (zones never interact); each set is scored "
        "alone. Precision and recall are per zone set, intrusions and crossings together; a "
        "10th percentile is a real set's value (lower). Delay: raising frame minus the "
        f"expected frame, median per set, then the median over sets. Goal: {GOAL}.",
        "",
    ]


def write_report(results: dict[str, Any], folder: Path) -> None:
    m = results["machine"]
    lines = [
        "# Randomised-zone evaluation (benchmarks/random_zones.py)", "",
        f"Date: {results['date']}. Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB,"
        f" Python {m['python']}. Command: `.venv/bin/python -m benchmarks.random_zones`.", "",
        *_method(),
        "| scene | split | sets | precision p50 | p10 | recall p50 | p10 | delay p50 (fr) "
        "| expected | raised | matched | false alarms by cause |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, sc in results["scenes"].items():
        for split, s in sc["splits"].items():
            causes = ", ".join(f"{k} {v}" for k, v in sorted(s["false_alarms"].items())) or "-"
            lines.append(
                f"| {name} | {split} | {s['sets']} | {_f(s['precision_p50'])} | "
                f"{_f(s['precision_p10'])} | {_f(s['recall_p50'])} | {_f(s['recall_p10'])} | "
                f"{_f(s['delay_p50_of_sets'], 1)} | {s['expected']} | {s['raised']} | "
                f"{s['matched']} | {causes} |")
    lines += _verdict(results)
    lines += _before_after(results, folder)
    lines += ["", "| scene | frames | fps | zones run at once | pipeline frames/s | rules "
              "ms/frame | appearance ms/frame | people/frame |",
              "|---|---|---|---|---|---|---|---|"]
    for name, sc in results["scenes"].items():
        ms = sc["ms_per_frame"]
        lines.append(f"| {name} | {sc['frames']} | {sc['fps']:g} | {sc['zones']} | "
                     f"{_f(sc['pipeline_fps'], 1)} | {_f(ms['rules'])} | "
                     f"{_f(sc.get('appearance_ms_per_frame'))} | "
                     f"{_f(sc.get('people_per_frame'), 1)} |")
    lines += ["", "Frames/s and rules time are with every zone of every set at once on a shared "
              "2-core machine (noisy); the appearance histograms are computed once per person "
              "and frame whatever the number of zones.", "",
              "Per-set scores, each false alarm and each miss: `random_zones.json`.", ""]
    (folder / "random_zones.md").write_text("\n".join(lines))


GOALS = (("precision_p50", 0.95), ("precision_p10", 0.85), ("recall_p50", 0.95),
         ("recall_p10", 0.85))


def _verdict(results: dict[str, Any]) -> list[str]:
    """Each scene's held-out numbers against the goal, with the gap where one is missed."""
    out = ["", "Goal on the held-out report split:", ""]
    for name, sc in results["scenes"].items():
        s = sc["splits"].get("report")
        if s is None:
            continue
        gaps = [f"{k.replace('_', ' ')} {s[k]:.3f} (goal {goal:.2f})"
                for k, goal in GOALS if s[k] < goal]
        delay = s["delay_p50_of_sets"]
        if delay is None or delay > 3:
            gaps.append(f"median delay {_f(delay, 1)} frames (goal 3)")
        out.append(f"- {name}: " + ("met" if not gaps else "missed: " + "; ".join(gaps)))
    return out


def _before_after(results: dict[str, Any], folder: Path) -> list[str]:
    """The report split against the same split before this work, where that was measured."""
    path = folder / "random_zones_before.json"
    if not path.exists():
        return []
    before = json.loads(path.read_text())
    out = ["", f"Before and after, report split (before: {before['note']}, "
           f"{before['date']}):", "",
           "| scene | | precision p50 | p10 | recall p50 | p10 | delay p50 | raised | matched "
           "| false alarms by cause |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, sc in results["scenes"].items():
        old = before["scenes"].get(name, {}).get("splits", {}).get("report")
        new = sc["splits"].get("report")
        for label, s in (("before", old), ("after", new)):
            if s is None:
                continue
            causes = ", ".join(f"{k} {v}" for k, v in sorted(s["false_alarms"].items())) or "-"
            out.append(f"| {name} | {label} | {_f(s['precision_p50'])} | "
                       f"{_f(s['precision_p10'])} | {_f(s['recall_p50'])} | "
                       f"{_f(s['recall_p10'])} | {_f(s['delay_p50_of_sets'], 1)} | "
                       f"{s['raised']} | {s['matched']} | {causes} |")
    return out
