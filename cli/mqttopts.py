"""The MQTT identity options every command that talks to a broker shares.

``perimeter central``, ``perimeter speaker`` and ``perimeter sim radar`` take the same
``--mqtt-*`` options and turn them into a ``wire.client.Broker``. The password is read from a
file (``--mqtt-password-file``) or an environment variable (``--mqtt-password-env``, default
``PERIMETER_MQTT_PASSWORD``), never from the command line, where ``ps`` would show it to
every user of the machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wire.client import PASSWORD_ENV, PLAIN_PORT, TLS_PORT, Broker, Tls, read_secret


def add_identity_options(p: argparse.ArgumentParser) -> None:
    """Register ``--mqtt-user``, the password source and the TLS files."""
    g = p.add_argument_group("MQTT identity (see README: Securing a site)")
    g.add_argument("--mqtt-user", metavar="NAME", help="MQTT user name (this device's)")
    g.add_argument("--mqtt-password-file", type=Path, metavar="FILE",
                   help="file whose first line is the MQTT password")
    g.add_argument("--mqtt-password-env", default=PASSWORD_ENV, metavar="VAR",
                   help=f"environment variable holding the password (default {PASSWORD_ENV})")
    g.add_argument("--mqtt-ca", type=Path, metavar="FILE",
                   help="CA certificate the broker's must be signed by (turns TLS on)")
    g.add_argument("--mqtt-cert", type=Path, metavar="FILE", help="this device's certificate")
    g.add_argument("--mqtt-key", type=Path, metavar="FILE", help="this device's private key")
    g.add_argument("--mqtt-tls", action="store_true",
                   help="TLS with the system's trust store (when the broker has a public "
                        "certificate and no --mqtt-ca is given)")


def wants_tls(args: argparse.Namespace) -> bool:
    return bool(args.mqtt_tls or args.mqtt_ca or args.mqtt_cert)


def default_port(args: argparse.Namespace) -> int:
    """8883 with TLS, else 1883."""
    return TLS_PORT if wants_tls(args) else PLAIN_PORT


def broker_from_args(args: argparse.Namespace, host: str, port: int | None) -> Broker:
    """The broker to connect to as the options say; ``ValueError`` (one line) when a file
    is missing or the options do not fit together."""
    tls = None
    if wants_tls(args):
        tls = Tls(_str(args.mqtt_ca), _str(args.mqtt_cert), _str(args.mqtt_key))
    elif args.mqtt_key:
        raise ValueError("--mqtt-key needs --mqtt-cert")
    password = read_secret(args.mqtt_password_file, args.mqtt_password_env)
    if password is not None and not args.mqtt_user:
        if args.mqtt_password_file:
            raise ValueError("--mqtt-password-file needs --mqtt-user")
        password = None  # a password in the environment for another tool: not ours to send
    return Broker(host, port if port is not None else default_port(args),
                  args.mqtt_user or None, password, tls)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
