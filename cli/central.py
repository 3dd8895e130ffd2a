"""``perimeter central``: the aggregator (MQTT intake, Redis, plans, HTTP API) as a service.

It signs every speaker command with ``--command-key`` (``perimeter pki init`` writes
``command-signing.key``); running without one takes ``--unsigned-commands``, said out loud,
for speakers that do not check signatures. Its MQTT identity: ``cli.mqttopts``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from central.auth import Accounts

from cli.mqttopts import add_identity_options, broker_from_args
from common import sdnotify

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser("central", help="run the central aggregator")
    c.add_argument("--config", type=Path, required=True, help="central YAML config")
    c.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    c.add_argument("--mqtt", default="127.0.0.1", metavar="HOST[:PORT]",
                   help="broker (default 127.0.0.1, port 1883, or 8883 with TLS)")
    c.add_argument("--namespace", default="perimeter", help="Redis key prefix")
    c.add_argument("--api-host", default="127.0.0.1")
    c.add_argument("--api-port", type=int, default=8080)
    c.add_argument("--client-id", default="perimeter-central",
                   help="MQTT client id (persistent session)")
    c.add_argument("--share-group", help="MQTT shared-subscription group (several workers)")
    c.add_argument("--worker-id", help="this worker's id among several (default: client id)")
    c.add_argument("--partitions", type=int, default=8,
                   help="partition streams (the same on every worker; default 8)")
    c.add_argument("--command-key", type=Path, metavar="FILE",
                   help="private key that signs speaker commands (command-signing.key)")
    c.add_argument("--unsigned-commands", action="store_true",
                   help="send speaker commands unsigned (speakers then cannot tell them "
                        "from forgeries)")
    add_identity_options(c)


LEGACY_KEY = "legacy-token"


def legacy_token(accounts: Accounts) -> None:
    """The old shared ``PERIMETER_API_TOKEN``, if still set, becomes the named API key
    ``legacy-token`` with the operator role: revocable (``perimeter users key revoke
    legacy-token``; a revoked one is not taken back at the next start) and recorded as
    ``key:legacy-token`` in incident logs."""
    from central.auth import AccountError, Role

    token = os.environ.get("PERIMETER_API_TOKEN")
    if not token:
        return
    try:
        accounts.import_key(LEGACY_KEY, token, Role.OPERATOR, by="PERIMETER_API_TOKEN")
    except AccountError as exc:
        print(f"central: PERIMETER_API_TOKEN not accepted: {exc}", flush=True)
        return
    print(f"central: PERIMETER_API_TOKEN is the API key {LEGACY_KEY!r} (operator); move "
          "to named keys (perimeter users key add) and revoke it", flush=True)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from central.api import create_app
    from central.auth import Accounts, Role
    from central.config import load_central_config
    from central.metrics import default_metrics
    from central.runtime import Central
    from wire.client import Broker
    from wire.signing import CommandSigner

    if args.command_key is None and not args.unsigned_commands:
        print("error: give --command-key FILE (perimeter pki init writes "
              "command-signing.key) or, knowingly, --unsigned-commands", file=sys.stderr)
        return 2
    try:
        signer = CommandSigner.load(args.command_key) if args.command_key else None
        host_port = Broker.parse(args.mqtt)
        port = host_port.port if ":" in args.mqtt else None
        broker = broker_from_args(args, host_port.host, port)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if signer is None:
        log.warning("speaker commands are sent unsigned (--unsigned-commands)")
    loaded = load_central_config(args.config)
    central = Central(loaded.config, args.redis, broker,
                      ns=args.namespace, client_id=args.client_id,
                      share_group=args.share_group, metrics=default_metrics(),
                      worker_id=args.worker_id, partitions=args.partitions, signer=signer)
    central.start()
    accounts = Accounts(central.redis, args.namespace)
    legacy_token(accounts)
    if not any(u.role is Role.ADMIN and not u.disabled for u in accounts.users()):
        print(f"central: no admin account yet; make the first with: perimeter users "
              f"--redis {args.redis} --namespace {args.namespace} add NAME --role admin",
              flush=True)
    # systemd (Type=notify, WatchdogSec): up now; the watchdog is fed while the intake turns
    watchdog = sdnotify.Watchdog(central.intake.turning)
    watchdog.start()
    sdnotify.ready(f"worker {central.worker.worker_id}")
    print(f"central: API http://{args.api_host}:{args.api_port}/docs, metrics "
          f"http://{args.api_host}:{args.api_port}/metrics, MQTT {broker.url}, "
          f"Redis {args.redis}", flush=True)
    try:
        uvicorn.run(create_app(central.aggregator, accounts, ops=central.ops,
                               modes=central), host=args.api_host,
                    port=args.api_port, log_level="warning")
    finally:
        watchdog.stop()
        central.stop()
    return 0


