"""Memory over a long loop replay: a 24/7 edge worker must not grow.

    .venv/bin/python -m benchmarks.soak --minutes 60

Loops PETS09 through the whole pipeline (default detector) in real time or as fast as it
goes (default), sampling resident memory and the rules' per-track state every 30 s, and
writes ``benchmarks/results/soak.md`` with the samples and the growth after warm-up.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from benchmarks.machine import machine_info
from benchmarks.replay_bench import REPO, RESULTS, START
from edge.camera import build_pipeline, build_rules
from edge.config import load_config, video_path
from edge.detection.factory import make_detector
from edge.pipeline import CameraPipeline
from edge.sources.file import VideoFileSource
from edge.sources.frame import Frame
from zones.alarm import Alarm


class _Done(Exception):
    """The soak's time is up."""


def rss_mb() -> float:
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def rule_state_size(pipe: CameraPipeline) -> int:
    return sum(len(getattr(r, "state", {})) for z in pipe.rules.zones for r in z.rules)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    ap.add_argument("--realtime", action="store_true", help="pace at the video's frame rate")
    args = ap.parse_args(argv)
    loaded = load_config(REPO / "config/pets09.yaml")
    cam = loaded.config.cameras[0]
    source = VideoFileSource(video_path(loaded, 0), start_time=START, fps=cam.fps,
                             loop=True, realtime=args.realtime)
    pipe = build_pipeline(loaded, build_rules(loaded, 0, cam, source.size), source.fps,
                          make_detector(loaded), [])
    samples: list[tuple[float, int, int, float, int]] = []
    t0 = time.monotonic()
    deadline = t0 + args.minutes * 60
    next_sample = t0
    alarms = 0

    def on_frame(frame: Frame, events: list[Alarm]) -> None:
        nonlocal next_sample, alarms
        alarms += len(events)
        now = time.monotonic()
        if now >= next_sample:
            samples.append((now - t0, frame.index, source.loops, rss_mb(), rule_state_size(pipe)))
            print(f"{samples[-1][0]:7.0f} s  frame {frame.index:7d}  loops {source.loops:4d}  "
                  f"RSS {samples[-1][3]:7.1f} MB  rule state {samples[-1][4]}", flush=True)
            next_sample += args.every
        if now >= deadline:
            raise _Done

    with contextlib.suppress(_Done):
        pipe.run(source.frames(), on_frame)
    samples.append((time.monotonic() - t0, pipe.stats.frames, source.loops, rss_mb(),
                    rule_state_size(pipe)))
    write(samples, args, pipe.stats.frames, alarms)
    return 0


def write(samples: list[tuple[float, int, int, float, int]], args: argparse.Namespace,
          frames: int, alarms: int) -> None:
    m = machine_info()
    warm = [s for s in samples if s[0] >= 300] or samples[len(samples) // 2:]
    growth = warm[-1][3] - warm[0][3]
    hours = max((warm[-1][0] - warm[0][0]) / 3600, 1e-9)
    lines = [
        "# Soak: memory over a loop replay (benchmarks/soak.py)", "",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Machine: {m['cpu']}, "
        f"{m['cores']} cores, {m['mem_gib']} GiB. PETS09 looped through decode, yolov4-tiny, "
        f"ByteTrack and every rule of config/pets09.yaml "
        f"({'real time' if args.realtime else 'as fast as it goes'}).", "",
        f"Ran {samples[-1][0] / 60:.1f} min: {frames} frames, {samples[-1][2]} loops of the "
        f"video, {alarms} alarm events.", "",
        f"RSS after warm-up (from {warm[0][0]:.0f} s): {warm[0][3]:.1f} MB -> "
        f"{warm[-1][3]:.1f} MB ({growth:+.1f} MB, {growth / hours:+.1f} MB/hour); peak "
        f"{max(s[3] for s in samples):.1f} MB. Rule state never above "
        f"{max(s[4] for s in samples)} tracks.", "",
        "| seconds | frame | loops | RSS MB | rule state (tracks) |", "|---|---|---|---|---|",
    ]
    lines += [f"| {s[0]:.0f} | {s[1]} | {s[2]} | {s[3]:.1f} | {s[4]} |" for s in samples]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak.md").write_text("\n".join(lines) + "\n")
    print(Path(RESULTS / "soak.md").read_text())


if __name__ == "__main__":
    sys.exit(main())
