"""``perimeter sim radar``: a radar that reports real people, from PETS09's ground truth.

The MOT15 ground truth of PETS09-S2L1 gives every annotated person's position on the ground
plane in metres (its ``x, y`` columns): real walking trajectories, in the same plane as the
camera's calibration in ``config/pets09.yaml``. The simulator places a configured radar on
that plane, turns each person's position into what the radar would report (slant range,
azimuth from boresight, speed) and publishes one ``perimeter.radar/1`` message per person per
scan, stamped with the wall-clock time of the scan, as a real radar stamps its measurements.

Scans follow the ground-truth frames at ``fps`` (7, the sequence's nominal rate) divided by
``--speed``; faster than real time compresses the scenario's clock too (people walk
``speed`` times faster), which a dwell threshold then sees. Optional Gaussian noise on range
and azimuth, random message drops and ``--latlon`` (GNSS positions instead of range and
azimuth) exercise the intake's handling of imperfect radars. Targets beyond the radar's
range or field of view are not reported, as a real radar would not see them.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.config import ConfigError, load_config
from zones.radar import GeoOrigin, RadarMessage
from zones.radar_config import Radar

log = logging.getLogger(__name__)

GT_FPS = 7.0  # PETS09-S2L1's nominal frame rate (seqinfo.ini)


@dataclass(frozen=True)
class GtPoint:
    frame: int
    track: int
    x: float
    y: float


@dataclass(frozen=True)
class SimOptions:
    fps: float = GT_FPS
    speed: float = 1.0
    noise_range_m: float = 0.0
    noise_azimuth_deg: float = 0.0
    drop: float = 0.0
    id_offset: int = 100
    latlon: bool = False
    seed: int = 0


def read_world_tracks(path: Path) -> list[list[GtPoint]]:
    """MOT15 ground truth -> the counted people of each frame, frames in order (gaps kept as
    empty scans so time keeps its pace)."""
    frames: dict[int, list[GtPoint]] = defaultdict(list)
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        f = line.split(",")
        if len(f) < 9:
            raise ValueError(f"{path}:{n}: expected 10 comma-separated fields, got {len(f)}")
        if float(f[6]) == 0:  # conf 0: annotated but not counted
            continue
        frames[int(f[0])].append(GtPoint(int(f[0]), int(f[1]), float(f[7]), float(f[8])))
    if not frames:
        raise ValueError(f"{path}: no ground-truth rows")
    return [frames.get(i, []) for i in range(min(frames), max(frames) + 1)]


def scan(points: list[GtPoint], radar: Radar, t: float, scenario_t: float,
         prev: dict[int, tuple[float, float, float]], opts: SimOptions,
         rng: np.random.Generator, origin: GeoOrigin | None = None,
         id_base: int = 0) -> list[RadarMessage]:
    """What the radar reports for one frame of people (``prev``: each track's last position
    and scenario time, for speed; updated in place)."""
    if not points:
        return []
    cfg = radar.config
    xy = np.asarray([(p.x, p.y) for p in points], dtype=np.float64)
    rng_m, az = radar.pose.to_polar(xy)
    rng_m = rng_m + rng.normal(0.0, opts.noise_range_m, len(points)) if opts.noise_range_m \
        else rng_m
    az = az + rng.normal(0.0, opts.noise_azimuth_deg, len(points)) if opts.noise_azimuth_deg \
        else az
    seen = (rng_m <= cfg.max_range_m) & (np.abs(az) <= cfg.fov_deg / 2.0)
    keep = seen & (rng.random(len(points)) >= opts.drop) if opts.drop > 0 else seen
    noisy = radar.pose.to_site(np.maximum(rng_m, 0.0), az)
    ll = origin.to_latlon(noisy) if opts.latlon and origin is not None else None
    out: list[RadarMessage] = []
    for i, p in enumerate(points):
        last = prev.get(p.track)
        prev[p.track] = (p.x, p.y, scenario_t)
        speed = 0.0
        if last is not None and scenario_t > last[2]:
            speed = math.hypot(p.x - last[0], p.y - last[1]) / (scenario_t - last[2])
        if not keep[i]:
            continue
        out.append(RadarMessage(
            radar_id=cfg.id, track_id=id_base + opts.id_offset + p.track, time=t,
            range_m=round(float(max(rng_m[i], 0.0)), 3), azimuth_deg=round(float(az[i]), 3),
            speed_mps=round(min(speed, 200.0), 3), class_="person",
            lat=None if ll is None else round(float(ll[i, 0]), 8),
            lon=None if ll is None else round(float(ll[i, 1]), 8)))
    return out


def stream(frames: list[list[GtPoint]], radar: Radar, opts: SimOptions, *,
           origin: GeoOrigin | None = None, loop: bool = False,
           clock: Callable[[], float] = time.time,
           sleep: Callable[[float], None] = time.sleep) -> Iterator[list[RadarMessage]]:
    """Scans paced at ``fps * speed`` per wall-clock second; each loop renumbers the tracks
    (a radar gives people it meets again new ids)."""
    rng = np.random.default_rng(opts.seed)
    period = 1.0 / (opts.fps * opts.speed)
    span = max((p.track for fr in frames for p in fr), default=0) + 1
    start = time.monotonic()
    n = 0
    lap = 0
    while True:
        prev: dict[int, tuple[float, float, float]] = {}
        for k, points in enumerate(frames):
            wait = start + n * period - time.monotonic()
            if wait > 0:
                sleep(wait)
            n += 1
            yield scan(points, radar, clock(), k / opts.fps, prev, opts, rng, origin,
                       id_base=lap * span)
        lap += 1
        if not loop:
            return


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


if TYPE_CHECKING:
    SubCommands = argparse._SubParsersAction[argparse.ArgumentParser]


def add_parser(sub: SubCommands) -> SubCommands:
    """Register ``sim`` and its ``radar`` command; returns ``sim``'s subcommands (the camera
    simulators add theirs, ``edge.sim_cli``)."""
    s = sub.add_parser("sim", help="simulated sensors for testing a site")
    ssub: SubCommands = s.add_subparsers(dest="sim_command", required=True)
    r = ssub.add_parser("radar", help="publish radar tracks of PETS09's real trajectories")
    r.add_argument("--config", required=True, type=Path, help="YAML config with radars")
    r.add_argument("--radar", help="radar id in the config (default: the first)")
    r.add_argument("--gt", type=Path, help="MOT15 gt.txt with world x, y (default: beside "
                                           "the first camera's video, gt/gt.txt)")
    r.add_argument("--mqtt", metavar="HOST:PORT", type=host_port,
                   help="broker (default: the config's mqtt.host and port)")
    r.add_argument("--speed", type=float, default=1.0, help="1: real time; 10: ten times faster")
    r.add_argument("--fps", type=float, default=GT_FPS, help="scans per scenario second")
    r.add_argument("--loop", action="store_true", help="start again at the end")
    r.add_argument("--max-messages", type=int, help="stop after this many messages")
    r.add_argument("--noise-range", type=float, default=0.0, help="range noise sigma, m")
    r.add_argument("--noise-azimuth", type=float, default=0.0, help="azimuth noise sigma, deg")
    r.add_argument("--drop", type=float, default=0.0, help="share of messages not sent")
    r.add_argument("--seed", type=int, default=0, help="random seed for noise and drops")
    r.add_argument("--id-offset", type=int, default=100, help="radar track id = gt id + this")
    r.add_argument("--latlon", action="store_true", help="send lat/lon (needs site.origin)")
    r.add_argument("--qos", type=int, choices=(0, 1), default=0, help="MQTT QoS")
    return ssub


def run(args: argparse.Namespace) -> int:
    """Publish until the ground truth ends (or forever with ``--loop``); 2 on bad input, 1
    when the broker cannot be reached."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edge.ground import load_ground

    loaded = load_config(args.config)
    cfg = loaded.config
    ground = load_ground(loaded)
    if not ground.radars:
        raise ConfigError([f"{loaded.where(('radars',))}: the config has no radars"])
    rid = args.radar or next(iter(ground.radars))
    if rid not in ground.radars:
        raise ConfigError([f"{loaded.where(('radars',))}: no radar {rid!r} "
                           f"(have: {', '.join(ground.radars)})"])
    if args.latlon and ground.origin is None:
        raise ConfigError([f"{loaded.where(('site',))}: --latlon needs site.origin"])
    if not (0 < args.speed <= 1000 and 0 < args.fps <= 100 and 0 <= args.drop < 1):
        raise ConfigError(["--speed must be in (0, 1000], --fps in (0, 100], --drop in [0, 1)"])
    gt = args.gt
    if gt is None:
        if not cfg.cameras:
            raise ConfigError(["--gt is needed: the config has no camera to find it beside"])
        src = cfg.cameras[0].source or ""
        gt = loaded.resolve_path(src).parent / "gt" / "gt.txt"
    try:
        frames = read_world_tracks(gt)
    except (OSError, ValueError) as exc:
        raise ConfigError([f"--gt {gt}: {exc}"]) from exc
    host, port = args.mqtt or (cfg.mqtt.host, cfg.mqtt.port)
    radar = ground.radars[rid]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"perimeter-sim-radar-{rid}")
    if cfg.mqtt.username is not None:
        client.username_pw_set(cfg.mqtt.username, cfg.mqtt.password)
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        print(f"error: cannot reach the MQTT broker at {host}:{port}: {exc}", file=sys.stderr)
        return 1
    client.loop_start()
    opts = SimOptions(fps=args.fps, speed=args.speed, noise_range_m=args.noise_range,
                      noise_azimuth_deg=args.noise_azimuth, drop=args.drop,
                      id_offset=args.id_offset, latlon=args.latlon, seed=args.seed)
    sent = 0
    info: mqtt.MQTTMessageInfo | None = None
    print(f"sim radar {rid}: {len(frames)} scans of {gt} to {host}:{port} {radar.topic}")
    limit = args.max_messages
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())  # stop cleanly, say what was sent
    try:
        for msgs in stream(frames, radar, opts, origin=ground.origin, loop=args.loop):
            if stop.is_set():
                break
            for m in msgs if limit is None else msgs[:max(limit - sent, 0)]:
                info = client.publish(radar.topic, m.to_json(), qos=args.qos)
                sent += 1
            if limit is not None and sent >= limit:
                break
    finally:
        if info is not None:
            info.wait_for_publish(timeout=10)
        client.disconnect()
        client.loop_stop()
        print(f"sim radar {rid}: {sent} messages published")
    return 0
