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
import subprocess
import sys
from collections.abc import Callable

from cli import central, demo, edge, onvif, pki, sim, speaker
from common.yamlconfig import ConfigError
from edge.detection.base import DetectorError
from edge.sources.file import SourceError
from models.registry import ModelError

log = logging.getLogger("perimeter")

Command = Callable[[argparse.Namespace], int]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perimeter", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    edge.add_parsers(sub)
    central.add_parser(sub)
    demo.add_parser(sub)
    speaker.add_arguments(sub.add_parser(
        "speaker", help="loudspeaker agent: speak the central's MQTT commands (espeak-ng)"))
    onvif.add_parser(sub)
    sim.add_parser(sub)
    pki.add_parser(sub)
    return p


COMMANDS: dict[str, Command] = {
    "replay": edge.cmd_replay, "run": edge.cmd_run, "config": edge.cmd_config_check,
    "models": edge.cmd_models, "central": central.run, "demo": demo.run,
    "speaker": speaker.run, "onvif": onvif.run, "sim": sim.run, "pki": pki.run,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
