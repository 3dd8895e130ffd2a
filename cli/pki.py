"""``perimeter pki init | issue``: a site's own certificate authority (``wire.pki``).

    perimeter pki init --dir /etc/perimeter/pki --site park
    perimeter pki issue broker --role broker --host mqtt.park.lan --host 10.0.0.2
    perimeter pki issue central --role central
    perimeter pki issue edge-1 --role edge --site park
    perimeter pki issue spk-1 --role speaker --site park

Each ``issue`` prints what it wrote and where it goes; passwords are written to files (never
printed). Exit codes: 0 done; 2 bad input (a bad name or role, no CA, a CA already there).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from wire import pki, topics

if TYPE_CHECKING:
    SubCommands = argparse._SubParsersAction[argparse.ArgumentParser]

DEFAULT_DIR = Path("pki")


def add_parser(sub: SubCommands) -> None:
    p = sub.add_parser("pki", help="a site's own certificate authority: broker and device "
                                   "certificates, passwords and ACLs")
    psub: SubCommands = p.add_subparsers(dest="pki_command", required=True)
    i = psub.add_parser("init", help="create the CA and the central's command-signing key")
    i.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the CA folder (default pki)")
    i.add_argument("--site", default="site", help="site name in the CA's name")
    i.add_argument("--days", type=int, default=pki.CA_DAYS, help="CA validity in days")
    s = psub.add_parser("issue", help="a device's key, certificate, password and ACL entries")
    s.add_argument("name", help="device name: its MQTT user and certificate CN (e.g. edge-1)")
    s.add_argument("--role", required=True, choices=topics.ROLES)
    s.add_argument("--site", help="the device's site id (every role but central and broker)")
    s.add_argument("--host", action="append", default=[], metavar="NAME_OR_IP",
                   help="broker: a host name or address devices connect to (repeatable; "
                        "default localhost, 127.0.0.1, ::1)")
    s.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the CA folder (default pki)")
    s.add_argument("--days", type=int, default=pki.DEVICE_DAYS, help="validity in days")


def run(args: argparse.Namespace) -> int:
    try:
        if args.pki_command == "init":
            ca = pki.init(args.dir, site=args.site, days=args.days)
            print(f"CA {ca} (its key {args.dir / 'ca.key'} stays here)")
            print(f"command signing: {args.dir / 'command-signing.key'} for the central only, "
                  f"{args.dir / 'command-signing.pub'} for every speaker")
            print(f"next: perimeter pki issue broker --role broker --host <broker host> "
                  f"--dir {args.dir}")
            return 0
        issued = pki.issue(args.dir, args.name, args.role, site=args.site,
                           hosts=args.host, days=args.days)
    except pki.PkiError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{issued.role} {issued.name}: copy {issued.folder}/ onto the device")
    print(f"  certificate {issued.cert}, key {issued.key}"
          + (f", password {issued.password}" if issued.password else ""))
    print(f"  broker files rewritten: {args.dir / 'mosquitto' / 'passwords'}, "
          f"{args.dir / 'mosquitto' / 'acl'} (reload mosquitto: systemctl reload mosquitto)")
    return 0
