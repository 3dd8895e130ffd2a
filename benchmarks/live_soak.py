"""A live worker left running through camera outages: memory, threads and files must not grow.

    .venv/bin/python -m benchmarks.live_soak --minutes 20

An edge box runs unattended for months while its cameras drop out in storms. This runs
``perimeter run``'s worker in-process on two live cameras (``perimeter sim rtsp`` serving
PETS09 at 7 frames/s on loopback, default detector, PETS09's zones), kills the camera server
every ``--outage-every`` seconds for a few seconds, and samples resident memory, threads and
open file descriptors every 30 s. A leak per reconnect (capture objects, threads, sockets)
shows up as growth with the number of outages. Writes ``benchmarks/results/live_soak.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.machine import machine_info
from benchmarks.soak import rss_mb
from common.net import free_port
from edge.config import load_config
from edge.live.run import RunOptions, build_worker
from edge.sinks import JsonlSink
from sim.rtsp import RtspServer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
VIDEO = ROOT.parent / "shared" / "data" / "mot15" / "PETS09-S2L1" / "vtest.avi"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def config(tmp: Path, url: str) -> Path:
    base = yaml.safe_load((ROOT / "config" / "pets09.yaml").read_text())
    cam = base["cameras"][0]
    del cam["source"], cam["fps"]
    doc = {"site": {"id": "soak"}, "edge": {"id": "soak-edge"}, "detector": base["detector"],
           "tracker": base["tracker"],
           "cameras": [{**cam, "id": f"cam-{i}", "source": url, "detect_every": 2,
                        "stall_seconds": 3} for i in (1, 2)]}
    path = tmp / "soak.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(minutes: float, outage_every: float, outage_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="live-soak-") as tmp_dir:
        tmp = Path(tmp_dir)
        server = RtspServer(VIDEO, free_port(), fps=7, log_path=tmp / "rtsp.log")
        server.start()
        out = tmp / "alarms.jsonl"
        worker = build_worker(load_config(config(tmp, server.url())), RunOptions(quiet=True),
                              sinks=[JsonlSink(out, fsync=False)])
        worker.start()
        samples: list[dict[str, Any]] = []
        outages = 0
        t0 = time.monotonic()
        next_sample, next_outage = t0, t0 + outage_every
        try:
            while (now := time.monotonic()) - t0 < minutes * 60:
                if now >= next_outage:
                    server.kill()
                    time.sleep(outage_s)
                    server.start()
                    outages += 1
                    next_outage = time.monotonic() + outage_every
                if now >= next_sample:
                    alarms = sum(1 for _ in out.open()) if out.exists() else 0
                    samples.append({
                        "s": round(now - t0), "rss_mb": round(rss_mb(), 1),
                        "threads": threading.active_count(), "fds": open_fds(),
                        "outages": outages, "alarm_events": alarms,
                        "frames": sum(c.processed for c in worker.cameras),
                        "reconnects": sum(c.source.reconnects for c in worker.cameras)})
                    print(samples[-1], flush=True)
                    next_sample += 30
                if not worker.alive:
                    raise RuntimeError(f"worker died: {worker.crashed}")
                time.sleep(0.5)
        finally:
            worker.stop()
            server.stop()
    return {"minutes": minutes, "outage_every_s": outage_every, "outage_s": outage_s,
            "samples": samples}


def report(res: dict[str, Any]) -> str:
    m = machine_info()
    s = res["samples"]
    warm = [x for x in s if x["s"] >= 300] or s
    first, last = warm[0], s[-1]
    hours = max((last["s"] - first["s"]) / 3600, 1e-9)
    lines = [
        "# Live soak: two RTSP cameras through repeated outages (benchmarks/live_soak.py)", "",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Machine: {m['cpu']}, "
        f"{m['cores']} cores, {m['mem_gib']} GiB. `perimeter run`'s worker in-process, two "
        "cameras on one `perimeter sim rtsp` (PETS09, 7 frames/s, detect_every 2, default "
        f"detector); the server killed every {res['outage_every_s']:g} s for "
        f"{res['outage_s']:g} s.", "",
        f"Ran {res['minutes']:g} min: {last['outages']} outages, {last['reconnects']} "
        f"reconnects, {last['frames']} frames processed, {last['alarm_events']} alarm events.",
        "",
        f"After warm-up (from {first['s']} s): RSS {first['rss_mb']} -> {last['rss_mb']} MB "
        f"({last['rss_mb'] - first['rss_mb']:+.1f} MB, "
        f"{(last['rss_mb'] - first['rss_mb']) / hours:+.1f} MB/hour); threads "
        f"{first['threads']} -> {last['threads']}; open files {first['fds']} -> {last['fds']}.",
        "", "| seconds | outages | reconnects | frames | alarm events | RSS MB | threads | fds |",
        "|---|---|---|---|---|---|---|---|"]
    for x in s:
        lines.append(f"| {x['s']} | {x['outages']} | {x['reconnects']} | {x['frames']} | "
                     f"{x['alarm_events']} | {x['rss_mb']} | {x['threads']} | {x['fds']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--outage-every", type=float, default=60.0, help="seconds between outages")
    ap.add_argument("--outage-seconds", type=float, default=4.0, help="length of each outage")
    ap.add_argument("--out", type=Path, default=RESULTS / "live_soak.md")
    args = ap.parse_args(argv)
    text = report(run(args.minutes, args.outage_every, args.outage_seconds))
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
