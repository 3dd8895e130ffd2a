"""``perimeter speaker``: run one loudspeaker agent from the command line.

Prints one line per command handled (its final state) on stdout until SIGINT/SIGTERM; exit
code 2 for bad options or a missing program, 1 when the broker cannot be reached. It plays
only commands signed by the central (``--command-pubkey``, the ``command-signing.pub`` of
``perimeter pki init``) unless told ``--accept-unsigned``; its MQTT identity:
``cli.mqttopts``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
import types
from pathlib import Path

from cli.mqttopts import add_identity_options, broker_from_args
from common import sdnotify
from speaker.agent import SpeakerAgent
from speaker.audio import SpeakerError
from wire.messages import StatusMessage
from wire.signing import CommandVerifier


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``perimeter speaker`` (shared with ``main``)."""
    p.add_argument("--id", required=True, dest="speaker_id", help="this speaker's id")
    p.add_argument("--host", default="127.0.0.1", help="MQTT broker host")
    p.add_argument("--port", type=int, help="MQTT broker port (default 1883, 8883 with TLS)")
    p.add_argument("--site", default="default", help="site (topic segment)")
    p.add_argument("--out-dir", type=Path, help="write each played clip here as WAV")
    p.add_argument("--device", action="store_true", help="play on the sound device (aplay)")
    p.add_argument("--cooldown", type=float, default=10.0, metavar="S",
                   help="quiet seconds after a command for same/lower priority (default 10)")
    p.add_argument("--clips", type=Path, metavar="DIR", help="folder of pre-rendered WAV clips")
    p.add_argument("--command-pubkey", type=Path, action="append", default=[], metavar="FILE",
                   help="the central's command-signing public key (repeatable while it is "
                        "rotated): only commands it signed play")
    p.add_argument("--accept-unsigned", action="store_true",
                   help="play unsigned commands too (anyone who can publish can then make "
                        "this speaker talk)")
    p.add_argument("--max-age", type=float, default=60.0, metavar="S",
                   help="refuse commands sent longer ago than this (default 60)")
    add_identity_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the agent until SIGINT/SIGTERM; one line per command handled on stdout."""
    if args.out_dir is None and not args.device:
        print("error: give --out-dir DIR, --device, or both", file=sys.stderr)
        return 2
    if not args.command_pubkey and not args.accept_unsigned:
        print("error: give --command-pubkey FILE (the central's command-signing.pub) or, "
              "knowingly, --accept-unsigned", file=sys.stderr)
        return 2

    def show(s: StatusMessage) -> None:
        if s.state != "playing":
            when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(s.at))
            print(f"{when} {s.command_id or '-'} {s.state}"
                  + (f" ({s.reason})" if s.reason else ""), flush=True)

    try:
        broker = broker_from_args(args, args.host, args.port)
        verifier = CommandVerifier.load(*args.command_pubkey) if args.command_pubkey else None
        agent = SpeakerAgent(args.speaker_id, site=args.site, broker=broker,
                             out_dir=args.out_dir, device=args.device, verifier=verifier,
                             cooldown_s=args.cooldown, clips_dir=args.clips, on_status=show,
                             max_age_s=args.max_age)
        agent.start()
    except (SpeakerError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ConnectionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    watchdog = sdnotify.Watchdog(agent.alive)  # systemd: Type=notify, WatchdogSec
    watchdog.start()
    sdnotify.ready()
    print(f"speaker {args.speaker_id} listening on {agent.command_topic} "
          f"({agent.broker.url})", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        watchdog.stop()
        agent.close()
    refused = ", ".join(f"{why}: {n}" for why, n in sorted(agent.rejected.items()))
    print(f"speaker {args.speaker_id} stopped; commands refused: {refused or 'none'}",
          flush=True)
    return 0
