"""The ``perimeter`` command line: the one front door to every command of the system.

Each command's arguments are parsed here (``cli.edge``, ``cli.central``, ``cli.speaker``,
``cli.sim``, ``cli.onvif``, ``cli.demo``) and handed to the package that does the work, so the
edge, the central and the speaker agent never import each other.

Exit codes: 0 done; 2 bad input (config, video, model), each problem on one line naming the
file, the line and the field; 130 interrupted (alarms written so far are kept).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Callable

from cli import central, config, demo, edge, onvif, pki, sim, speaker, users
from common import logs
from common.yamlconfig import ConfigError
from edge.detection.base import DetectorError
from edge.sources.file import SourceError
from models.registry import ModelError

log = logging.getLogger("perimeter")

Command = Callable[[argparse.Namespace], int]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perimeter", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--log-level", choices=LEVELS, default=None,
                   help="log threshold (default warning; -v: debug)")
    p.add_argument("--log-format", choices=logs.FORMATS,
                   default=os.environ.get("PERIMETER_LOG_FORMAT", "text"),
                   help="text: the line, then every context field as key=value (default); "
                        "json: one object per line (default from $PERIMETER_LOG_FORMAT)")
    sub = p.add_subparsers(dest="command", required=True)
    edge.add_parsers(sub)
    config.add_parser(sub)
    central.add_parser(sub)
    users.add_parser(sub)
    demo.add_parser(sub)
    speaker.add_arguments(sub.add_parser(
        "speaker", help="loudspeaker agent: speak the central's MQTT commands (espeak-ng)"))
    onvif.add_parser(sub)
    sim.add_parser(sub)
    pki.add_parser(sub)
    return p


COMMANDS: dict[str, Command] = {
    "replay": edge.cmd_replay, "run": edge.cmd_run, "config": config.run,
    "models": edge.cmd_models, "central": central.run, "users": users.run, "demo": demo.run,
    "speaker": speaker.run, "onvif": onvif.run, "sim": sim.run, "pki": pki.run,
}
LEVELS = ("debug", "info", "warning", "error")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = args.log_level or ("debug" if args.verbose else "warning")
    if args.log_format not in logs.FORMATS:  # from the environment, not checked by argparse
        print(f"error: PERIMETER_LOG_FORMAT: expected one of {', '.join(logs.FORMATS)}",
              file=sys.stderr)
        return 2
    logs.setup(getattr(logging, level.upper()), args.log_format)
    try:
        return COMMANDS[args.command](args)
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
