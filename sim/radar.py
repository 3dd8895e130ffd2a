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

import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

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


def publish(client: mqtt.Client, topic: str, scans: Iterator[list[RadarMessage]], *, qos: int,
            limit: int | None, stop: threading.Event) -> int:
    """Publish every scan's messages until the scans end, ``limit`` messages or ``stop``;
    returns how many were published (the last one acknowledged at QoS 1 before it returns)."""
    sent = 0
    info: mqtt.MQTTMessageInfo | None = None
    try:
        for msgs in scans:
            if stop.is_set():
                break
            for m in msgs if limit is None else msgs[:max(limit - sent, 0)]:
                info = client.publish(topic, m.to_json(), qos=qos)
                sent += 1
            if limit is not None and sent >= limit:
                break
    finally:
        if info is not None:
            info.wait_for_publish(timeout=10)
    return sent
