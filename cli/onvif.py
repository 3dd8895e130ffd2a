"""``perimeter onvif discover | profiles``: what a site installer runs before writing the
``onvif:`` block of a camera (which devices are there, which profile is the sub-stream).

Exit codes: 0 done (also when no device answered: an empty network is an answer); 1 the
device failed (unreachable, wrong password, no profiles; one line naming it); 2 bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from pydantic import ValidationError

from edge.config import OnvifConfig
from edge.sources.onvif.client import DiscoveryError, OnvifError, discover, redact, stream_uris


def add_parser(sub: Any) -> None:
    """Register ``onvif`` under the ``perimeter`` subcommands."""
    o = sub.add_parser("onvif", help="find ONVIF cameras and list their stream profiles")
    osub = o.add_subparsers(dest="onvif_command", required=True)
    d = osub.add_parser("discover", help="WS-Discovery probe of the local network")
    d.add_argument("--timeout", type=float, default=3.0, help="seconds to collect answers")
    d.add_argument("--interface", help="send the probe out of this interface (name or IPv4)")
    p = osub.add_parser("profiles", help="a device's media profiles and stream URIs")
    p.add_argument("--host", required=True, help="device address")
    p.add_argument("--port", type=int, default=80, help="ONVIF HTTP port")
    p.add_argument("--user", help="ONVIF user")
    p.add_argument("--password",
                   help="ONVIF password (default: $PERIMETER_ONVIF_PASSWORD, which keeps it "
                        "out of the process list)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    p.add_argument("--show-password", action="store_true",
                   help="print URIs with the password instead of ***")


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]])
                     .rstrip() for r in rows)


def _scopes(scopes: tuple[str, ...]) -> str:
    short = [s.removeprefix("onvif://www.onvif.org/") for s in scopes]
    return " ".join(short) or "-"


def cmd_discover(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        print("error: --timeout must be positive", file=sys.stderr)
        return 2
    try:
        found = discover(args.timeout, args.interface)
    except DiscoveryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not found:
        print(f"no ONVIF device answered within {args.timeout:g} s")
        return 0
    rows = [["ADDRESS", "NAME / MODEL", "XADDRS", "SCOPES"]]
    rows += [[d.address, d.label, " ".join(d.xaddrs) or "-", _scopes(d.scopes)] for d in found]
    print(_table(rows))
    print(f"{len(found)} device(s)")
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    password = args.password or os.environ.get("PERIMETER_ONVIF_PASSWORD")
    try:
        cfg = OnvifConfig(host=args.host, port=args.port, username=args.user, password=password)
    except ValidationError as exc:
        for err in exc.errors():
            print(f"error: --{err['loc'][0]}: {err['msg']}", file=sys.stderr)
        return 2
    try:
        found = stream_uris(cfg, timeout_s=args.timeout)
    except OnvifError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = [["#", "TOKEN", "NAME", "VIDEO", "STREAM URI"]]
    for i, (p, uri) in enumerate(found):
        video = " ".join(x for x in (p.encoding or "",
                                     "x".join(map(str, p.resolution or ()))) if x) or "-"
        rows.append([str(i), p.token, p.name or "-", video,
                     uri if args.show_password else redact(uri)])
    print(_table(rows))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.onvif_command == "discover":
        return cmd_discover(args)
    return cmd_profiles(args)
