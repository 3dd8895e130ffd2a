"""Turns ``replay.json`` into the committed table (``replay.md``) and plot (``replay.png``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def _f(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _rule_rows(label: str, rules: dict[str, Any]) -> list[str]:
    return [f"| {label} | {k} | {r['expected']} | {r['raised']} | {r['matched']} | "
            f"{_f(r['precision'])} | {_f(r['recall'])} | {_f(r['delay_frames_p50'], 1)} | "
            f"{_f(r['delay_frames_p95'], 1)} | {_f(r['delay_s_p50'])} | {_f(r['delay_s_p95'])} |"
            for k, r in rules.items()]


def write_report(results: dict[str, Any], folder: Path) -> None:
    m = results["machine"]
    lines = [
        "# Scored replays (benchmarks/replay_bench.py)", "",
        f"Date: {results['date']}. Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB,"
        f" Python {m['python']}; shared with other work, load average (1, 5, 15 min) "
        f"{m.get('load_avg', 'not recorded')} at the start of the last run. Packages: "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v) + ".", "",
        "Expected alarms: the same rules run on the MOT ground-truth tracks. A system alarm "
        "matches when zone, kind (and tripwire) agree, it is raised within the ground-truth "
        "episode (from 5 frames before entry), and its box overlaps the person's (IoU >= 0.3). "
        "Delay: raising frame minus the ground-truth entry frame. Stage times: `decode` is the "
        "wait for the next decoded frame (decoding runs ahead in its own thread); peak RSS is "
        "the process's, which runs the variants one after the other.", "",
    ]
    for seq, data in results["sequences"].items():
        lines += [f"## {seq} ({data['frames']} frames, {data['size'][0]}x{data['size'][1]}, "
                  f"{data['fps']:g} fps)", "",
                  "| detector | rule | expected | raised | matched | precision | recall | "
                  "delay p50 (fr) | p95 (fr) | p50 (s) | p95 (s) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, v in data["variants"].items():
            lines += _rule_rows(name, v["rules"])
            for alt, a in v.get("alternatives", {}).items():
                if "rules" in a:
                    lines += _rule_rows(f"{alt} (same tracks as {name})", a["rules"])
                else:
                    lines.append(f"| {alt} | skipped: {a.get('skipped')} |||||||||| |")
        lines += ["", "| detector | frames/s | decode | detect | track | rules | sinks "
                      "(ms/frame) | non-inference / inference | peak RSS MB |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, v in data["variants"].items():
            ms = v["ms_per_frame"]
            lines.append(f"| {name} | {v['fps']:.1f} | {ms['decode']:.2f} | {ms['detect']:.1f} | "
                         f"{ms['track']:.2f} | {ms['rules']:.2f} | {ms['sinks']:.2f} | "
                         f"{_f(100 * v['non_inference_share'], 1)} % | {v['peak_rss_mb']:.0f} |")
        lines += ["", "| counted by | zone | count MAE | GT mean count | area m^2 | "
                      "density MAE /m^2 |", "|---|---|---|---|---|---|"]
        for name, v in data["variants"].items():
            groups = [(name, v["crowd"])] + [(f"{k} ({name})", a.get("crowd", {}))
                                             for k, a in v.get("alternatives", {}).items()]
            for label, crowd in groups:
                for zone, c in crowd.items():
                    lines.append(f"| {label} | {zone} | {c['count_mae']:.3f} | "
                                 f"{c['gt_mean_count']:.2f} | {_f(c['area_m2'], 1)} | "
                                 f"{_f(c['density_mae_per_m2'], 4)} |")
        lines.append("")
    (folder / "replay.md").write_text("\n".join(lines) + "\n")
    _plot(results, folder / "replay.png")


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seqs = list(results["sequences"].items())
    fig, axes = plt.subplots(1, len(seqs) + 1, figsize=(6 * (len(seqs) + 1), 4.5))
    for ax, (seq, data) in zip(axes, seqs, strict=False):
        labels, prec, rec = [], [], []
        for name, v in data["variants"].items():
            groups = [(name, v["rules"])] + [(k.split()[0], a.get("rules", {}))
                                             for k, a in v.get("alternatives", {}).items()]
            for label, rules in groups:
                r = rules.get("intrusion")
                if r:
                    labels.append(label)
                    prec.append(r["precision"])
                    rec.append(r["recall"])
        x = range(len(labels))
        ax.bar([i - 0.2 for i in x], prec, 0.4, label="precision")
        ax.bar([i + 0.2 for i in x], rec, 0.4, label="recall")
        ax.set_xticks(list(x), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{seq}: intrusion alarms")
        ax.legend(fontsize=8)
    ax = axes[-1]
    name, data = seqs[0]
    stages = ["decode", "detect", "track", "rules", "sinks"]
    bottoms = [0.0] * len(data["variants"])
    for st in stages:
        vals = [v["ms_per_frame"][st] for v in data["variants"].values()]
        ax.bar(list(data["variants"]), vals, bottom=bottoms, label=st)
        bottoms = [b + v for b, v in zip(bottoms, vals, strict=True)]
    ax.set_ylabel("ms per frame")
    ax.set_title(f"{name}: time per stage")
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
