"""``perimeter central``: the aggregator (MQTT intake, Redis, plans, HTTP API) as a service."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from central.auth import Accounts

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser("central", help="run the central aggregator")
    c.add_argument("--config", type=Path, required=True, help="central YAML config")
    c.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    c.add_argument("--mqtt", default="127.0.0.1:1883", help="broker host:port")
    c.add_argument("--namespace", default="perimeter", help="Redis key prefix")
    c.add_argument("--api-host", default="127.0.0.1")
    c.add_argument("--api-port", type=int, default=8080)
    c.add_argument("--client-id", default="perimeter-central",
                   help="MQTT client id (persistent session)")
    c.add_argument("--share-group", help="MQTT shared-subscription group (several workers)")
    c.add_argument("--worker-id", help="this worker's id among several (default: client id)")
    c.add_argument("--partitions", type=int, default=8,
                   help="partition streams (the same on every worker; default 8)")


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

    loaded = load_central_config(args.config)
    central = Central(loaded.config, args.redis, Broker.parse(args.mqtt),
                      ns=args.namespace, client_id=args.client_id,
                      share_group=args.share_group, metrics=default_metrics(),
                      worker_id=args.worker_id, partitions=args.partitions)
    central.start()
    accounts = Accounts(central.redis, args.namespace)
    legacy_token(accounts)
    if not any(u.role is Role.ADMIN and not u.disabled for u in accounts.users()):
        print(f"central: no admin account yet; make the first with: perimeter users "
              f"--redis {args.redis} --namespace {args.namespace} add NAME --role admin",
              flush=True)
    print(f"central: API http://{args.api_host}:{args.api_port}/docs, metrics "
          f"http://{args.api_host}:{args.api_port}/metrics, MQTT {args.mqtt}, "
          f"Redis {args.redis}", flush=True)
    try:
        uvicorn.run(create_app(central.aggregator, accounts, ops=central.ops,
                               modes=central), host=args.api_host,
                    port=args.api_port, log_level="warning")
    finally:
        central.stop()
    return 0


