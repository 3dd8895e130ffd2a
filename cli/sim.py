"""``perimeter sim rtsp | onvif | radar``: sensors for a site installer or a new user with none.

``sim rtsp`` serves a video file as a live RTSP camera (``sim.rtsp``), ``sim onvif`` an ONVIF
device whose one profile streams a given RTSP URL (``sim.onvif``), ``sim radar`` publishes
radar tracks of PETS09's real trajectories (``sim.radar``). The camera simulators run in the
foreground and print where they serve; SIGTERM stops them with 0, Ctrl-C with 130. Exit codes
otherwise: 2 bad input (or GStreamer's RTSP server missing), 1 cannot serve (or, for the
radar, cannot reach the broker).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cli.mqttopts import add_identity_options, broker_from_args, wants_tls
from common.yamlconfig import ConfigError
from edge.config import load_config, mqtt_broker
from edge.radar.ground import load_ground
from sim.onvif import Device, DeviceSpec, Profile
from sim.radar import GT_FPS, SimOptions, publish, read_world_tracks, stream
from sim.rtsp import APT_PACKAGES, SYSTEM_PYTHON, RtspServer, RtspServerError, gst_rtsp_available
from wire.client import disconnect, make_client

if TYPE_CHECKING:
    SubCommands = argparse._SubParsersAction[argparse.ArgumentParser]

log = logging.getLogger(__name__)
ALL_INTERFACES = "0.0.0.0"


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def add_parser(sub: SubCommands) -> None:
    """Register ``sim`` and its ``radar``, ``rtsp`` and ``onvif`` commands."""
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
    add_identity_options(r)  # default: the config's mqtt section (user, password, TLS)
    r = ssub.add_parser("rtsp", help="serve a video file as a live RTSP camera (GStreamer)")
    r.add_argument("--video", required=True, type=Path, help="video file, served in a loop")
    r.add_argument("--port", type=int, default=8554, help="RTSP port")
    r.add_argument("--bind", default="127.0.0.1",
                   help="address to listen on (0.0.0.0: every interface)")
    r.add_argument("--mount", default="/live", help="stream path")
    r.add_argument("--fps", type=float, default=10.0, help="frames per second sent")
    r.add_argument("--user", help="require RTSP basic auth as this user")
    r.add_argument("--password", help="password for --user")
    r.add_argument("--stamp", action="store_true",
                   help="draw the send time into each frame (latency measurement)")

    o = ssub.add_parser("onvif", help="an ONVIF device whose profile streams an RTSP URL")
    o.add_argument("--rtsp-url", required=True,
                   help="stream URI of its one profile, e.g. rtsp://127.0.0.1:8554/live "
                        "(no credentials: clients add the ONVIF user and password)")
    o.add_argument("--port", type=int, default=8000, help="ONVIF HTTP port")
    o.add_argument("--bind", default="127.0.0.1",
                   help="address of this machine to listen on and advertise")
    o.add_argument("--user", default="admin", help="ONVIF user")
    o.add_argument("--password", default="secret", help="ONVIF password")
    o.add_argument("--no-auth", action="store_true", help="accept requests without credentials")
    o.add_argument("--name", default="SimCam", help="device name (WS-Discovery scopes)")
    o.add_argument("--resolution", default="768x576",
                   help="video size reported in GetProfiles (the stream is not probed)")
    o.add_argument("--discovery", action="store_true",
                   help="also answer WS-Discovery probes (UDP 3702 multicast)")


def run(args: argparse.Namespace) -> int:
    """``perimeter sim radar``, ``sim rtsp`` or ``sim onvif``."""
    if args.sim_command == "radar":
        return run_radar(args)
    return run_rtsp(args) if args.sim_command == "rtsp" else run_onvif(args)


def serve(name: str, failed: Callable[[], str | None]) -> int:
    """Block until SIGTERM (0), Ctrl-C (130) or ``failed()`` names a failure (1)."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            why = failed()
            if why is not None:
                print(f"error: {why}", file=sys.stderr)
                return 1
        code = 0
    except KeyboardInterrupt:
        code = 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(f"sim {name}: stopped", flush=True)
    return code


def errors_out(errors: list[str]) -> int:
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    return 2 if errors else 0


# -- sim rtsp ----------------------------------------------------------------------------------


def check_rtsp(args: argparse.Namespace) -> list[str]:
    errors = []
    if not args.video.is_file():
        errors.append(f"--video {args.video}: no such file")
    if not 0 < args.port < 65536:
        errors.append(f"--port {args.port}: must be in 1-65535")
    if not 0 < args.fps <= 120:
        errors.append(f"--fps {args.fps:g}: must be in (0, 120]")
    if not args.mount.startswith("/"):
        errors.append(f"--mount {args.mount}: must start with /")
    if (args.user is None) != (args.password is None):
        errors.append("--user and --password go together")
    return errors


def run_rtsp(args: argparse.Namespace) -> int:
    if code := errors_out(check_rtsp(args)):
        return code
    why = gst_rtsp_available()
    if why is not None:
        return errors_out([
            f"the RTSP simulator needs GStreamer's RTSP server for {SYSTEM_PYTHON} ({why}); "
            f"run deploy/setup.sh --full, or: sudo apt-get install {APT_PACKAGES}"])
    server = RtspServer(args.video.resolve(), args.port, fps=args.fps, mount=args.mount,
                        user=args.user, password=args.password, stamp=args.stamp,
                        host=args.bind, show_errors=True)
    try:
        try:
            server.start()
        except RtspServerError as exc:
            if exc.returncode == 2:  # the server's own line above says what GStreamer saw
                return errors_out([f"--video {args.video}: GStreamer cannot decode it"])
            print(f"error: {exc}".removesuffix(": (no log)"), file=sys.stderr)
            return 1
        url = server.url(args.user, "***") if args.user is not None else server.url()
        where = " (every interface)" if args.bind == ALL_INTERFACES else ""
        print(f"sim rtsp: {url}{where} serving {args.video} at {args.fps:g} frames/s; "
              "Ctrl-C stops", flush=True)
        log.info("sim rtsp serving", extra={"url": server.url(), "video": str(args.video)})

        def failed() -> str | None:
            if server.running or server.proc is None:
                return None
            return f"the rtsp server exited with {server.proc.returncode}"

        return serve("rtsp", failed)
    finally:
        server.stop()


# -- sim onvif ---------------------------------------------------------------------------------


def spec_from_args(args: argparse.Namespace) -> tuple[DeviceSpec, list[str]]:
    """The device the command line asks for, and one line per problem with it."""
    errors = []
    url = urlsplit(args.rtsp_url)
    try:
        rtsp_port = url.port or 554
    except ValueError:
        rtsp_port = 0
    if url.scheme not in ("rtsp", "rtsps") or not url.hostname or not rtsp_port:
        errors.append(f"--rtsp-url {args.rtsp_url}: expected rtsp://HOST[:PORT]/PATH")
    if url.username is not None:
        errors.append("--rtsp-url: leave the credentials out; clients put the ONVIF user and "
                      "password into the stream URI (give the RTSP server the same ones)")
    if not 0 < args.port < 65536:
        errors.append(f"--port {args.port}: must be in 1-65535")
    if args.bind in (ALL_INTERFACES, ""):
        errors.append("--bind: give an address of this machine (it is also advertised)")
    w, _, h = args.resolution.partition("x")
    if not (w.isdigit() and h.isdigit()):
        errors.append(f"--resolution {args.resolution}: expected WIDTHxHEIGHT")
        w = h = "0"
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    spec = DeviceSpec(
        host=args.bind, port=args.port, name=args.name,
        username=None if args.no_auth else args.user,
        password=None if args.no_auth else args.password,
        rtsp_host=url.hostname, rtsp_port=rtsp_port,
        profiles=[Profile("prof_main", "MainStream", int(w), int(h), path)])
    return spec, errors


def run_onvif(args: argparse.Namespace) -> int:
    spec, errors = spec_from_args(args)
    if code := errors_out(errors):
        return code
    try:
        device = Device(spec)
    except OSError as exc:
        print(f"error: cannot listen on {spec.host}:{spec.port}: {exc}", file=sys.stderr)
        return 1
    try:
        device.start()
        if args.discovery:
            try:
                device.discovery()
            except OSError as exc:
                print(f"error: WS-Discovery on {spec.host}: {exc} (multicast needs a network "
                      "interface, not loopback)", file=sys.stderr)
                return 1
        auth = "no auth" if spec.username is None else f"user {spec.username}"
        found = ", answers WS-Discovery" if args.discovery else ""
        print(f"sim onvif: {device.xaddr} ({spec.name}, {auth}{found}); profile prof_main "
              f"streams rtsp://{spec.rtsp_host}:{spec.rtsp_port}{spec.profiles[0].path}; "
              "Ctrl-C stops", flush=True)
        log.info("sim onvif serving", extra={"xaddr": device.xaddr})
        return serve("onvif", lambda: None)
    finally:
        device.close()


# -- sim radar ---------------------------------------------------------------------------------


def run_radar(args: argparse.Namespace) -> int:
    """Publish until the ground truth ends (or forever with ``--loop``); 2 on bad input, 1
    when the broker cannot be reached."""
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
    broker = mqtt_broker(loaded)
    if args.mqtt_user or wants_tls(args):
        try:
            broker = broker_from_args(args, broker.host, broker.port)
        except ValueError as err:
            raise ConfigError([str(err)]) from None
    if args.mqtt:
        broker = dataclasses.replace(broker, host=args.mqtt[0], port=args.mqtt[1])
    host, port = broker.host, broker.port
    radar = ground.radars[rid]
    client = make_client(broker, f"perimeter-sim-radar-{rid}", persistent=False,
                         logger="sim.radar.paho")
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        print(f"error: cannot reach the MQTT broker at {host}:{port}: {exc}", file=sys.stderr)
        return 1
    client.loop_start()
    opts = SimOptions(fps=args.fps, speed=args.speed, noise_range_m=args.noise_range,
                      noise_azimuth_deg=args.noise_azimuth, drop=args.drop,
                      id_offset=args.id_offset, latlon=args.latlon, seed=args.seed)
    print(f"sim radar {rid}: {len(frames)} scans of {gt} to {host}:{port} {radar.topic}")
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())  # stop cleanly, say what was sent
    sent = 0
    try:
        sent = publish(client, radar.topic,
                       stream(frames, radar, opts, origin=ground.origin, loop=args.loop),
                       qos=args.qos, limit=args.max_messages, stop=stop)
    finally:
        disconnect(client)
        print(f"sim radar {rid}: {sent} messages published")
    return 0
