"""``perimeter demo``: the whole system on one machine (``demo.run``), its command line."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from demo.procs import HOST
from demo.run import DEFAULT_CENTRAL_CONFIG, DEFAULT_EDGE_CONFIG, DemoOptions
from demo.run import run as run_demo


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of minutes: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"minutes must be >= 0, got {text}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``perimeter demo``."""
    p.add_argument("--minutes", type=_minutes, default=0.0, metavar="N",
                   help="stop after N minutes (fractions allowed; default 0: until Ctrl-C)")
    p.add_argument("--out", type=Path, default=Path("out/demo"), metavar="DIR",
                   help="alarms.jsonl, clips/, edge.log and summary.json (default out/demo)")
    p.add_argument("--api-host", default=HOST, help="API address (default 127.0.0.1)")
    p.add_argument("--api-port", type=int, default=8080, metavar="P",
                   help="API port (default 8080)")
    p.add_argument("--no-realtime", action="store_true",
                   help="replay as fast as the detector goes instead of at the video's rate")
    p.add_argument("--config", type=Path, default=DEFAULT_EDGE_CONFIG,
                   help="edge config (default config/pets09.yaml)")
    p.add_argument("--central-config", type=Path, default=DEFAULT_CENTRAL_CONFIG,
                   help="central config (default config/central.yaml); its webhook "
                        "notifiers are pointed at the demo's receiver")
    return p


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add_arguments(sub.add_parser(
        "demo", help="everything on one machine: broker, Redis, edge replay, central, "
                     "speakers, a webhook receiver"))




def run(args: argparse.Namespace) -> int:
    fields = {f.name for f in dataclasses.fields(DemoOptions)}
    return run_demo(DemoOptions(**{k: v for k, v in vars(args).items() if k in fields}))
