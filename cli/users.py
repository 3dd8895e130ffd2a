"""``perimeter users``: operator accounts and machine API keys, in the central's Redis.

Run on the central host (whoever can reach its Redis can manage accounts, which is why Redis
listens on loopback). The first admin is made here, before or after the central first starts:

    perimeter users add wang --role admin            # asks for the password twice
    perimeter users add li --role operator --site river-park
    perimeter users key add prometheus --role viewer # prints the key once; stored hashed
    perimeter users list | disable NAME | enable NAME | passwd NAME | role NAME --role R
    perimeter users key list | key revoke NAME

A password comes from the terminal (asked twice, not echoed) or, for scripts, from the
first line of standard input with ``--password-stdin``; never from the command line, where
the process list would show it. Exit codes: 0 done; 1 refused (exists, unknown, the last
admin); 2 bad input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import sys
from typing import Any

ROLES = ("viewer", "operator", "supervisor", "admin")


def add_parser(sub: Any) -> None:
    u = sub.add_parser("users", help="operator accounts and API keys (in the central's Redis)")
    u.add_argument("--redis", default=os.environ.get("PERIMETER_REDIS",
                                                     "redis://127.0.0.1:6379/0"),
                   help="the central's Redis URL (default $PERIMETER_REDIS or local)")
    u.add_argument("--namespace", default="perimeter", help="the central's Redis key prefix")
    us = u.add_subparsers(dest="users_command", required=True)
    add = us.add_parser("add", help="add a person's account")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True)
    add.add_argument("--site", action="append", help="limit a viewer/operator to a site "
                                                     "(repeat for several)")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    us.add_parser("list", help="accounts and their roles")
    for name, text in (("disable", "disable an account (its sessions end)"),
                       ("enable", "enable a disabled account")):
        us.add_parser(name, help=text).add_argument("name")
    pw = us.add_parser("passwd", help="set an account's password (its sessions end)")
    pw.add_argument("name")
    pw.add_argument("--password-stdin", action="store_true")
    role = us.add_parser("role", help="change an account's role or site limits")
    role.add_argument("name")
    role.add_argument("--role", choices=ROLES, required=True)
    role.add_argument("--site", action="append")
    key = us.add_parser("key", help="API keys for machines (edge tools, scripts, Prometheus)")
    ks = key.add_subparsers(dest="key_command", required=True)
    ka = ks.add_parser("add", help="make a key; it is printed once and stored hashed")
    ka.add_argument("name")
    ka.add_argument("--role", choices=ROLES, required=True)
    ka.add_argument("--site", action="append")
    ks.add_parser("list", help="keys, their roles and last use")
    ks.add_parser("revoke", help="revoke a key at once").add_argument("name")


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise ValueError("no terminal to ask the password on: use --password-stdin")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def _when(t: float | None) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else "-"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def _sites(s: frozenset[str] | None) -> str:
    return ",".join(sorted(s)) if s is not None else "all"


def run(args: argparse.Namespace) -> int:
    import redis

    from central.auth import AccountError, Accounts
    from central.auth.model import Conflict, NotFound

    who = f"cli:{getpass.getuser()}"
    client = redis.Redis.from_url(args.redis, socket_connect_timeout=5, socket_timeout=10)
    try:
        accounts = Accounts(client, args.namespace)
        return _dispatch(args, accounts, who)
    except (Conflict, NotFound) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (AccountError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        print(f"error: Redis {args.redis}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()


def _dispatch(args: argparse.Namespace, accounts: Any, who: str) -> int:
    from central.auth import Role

    cmd = args.users_command
    if cmd == "add":
        user = accounts.add_user(args.name, _password(args), Role(args.role), args.site, by=who)
        print(f"user {user.name} added: {user.role.value}, sites {_sites(user.sites)}")
    elif cmd == "list":
        rows = [["NAME", "ROLE", "SITES", "STATE", "CREATED", "BY"]]
        rows += [[u.name, u.role.value, _sites(u.sites), "disabled" if u.disabled else "active",
                  _when(u.created_at), u.created_by] for u in accounts.users()]
        print(_table(rows) if len(rows) > 1 else "no accounts yet (perimeter users add NAME "
                                                  "--role admin)")
    elif cmd in ("disable", "enable"):
        accounts.set_disabled(args.name, cmd == "disable", by=who)
        print(f"user {args.name} {cmd}d")
    elif cmd == "passwd":
        accounts.set_password(args.name, _password(args), by=who)
        print(f"password of {args.name} set; their sessions ended")
    elif cmd == "role":
        user = accounts.set_role(args.name, Role(args.role), args.site, by=who)
        print(f"user {user.name}: {user.role.value}, sites {_sites(user.sites)}")
    else:
        return _keys(args, accounts, who)
    return 0


def _keys(args: argparse.Namespace, accounts: Any, who: str) -> int:
    from central.auth import Role

    if args.key_command == "add":
        key, secret = accounts.add_key(args.name, Role(args.role), args.site, by=who)
        print(f"API key {key.name} ({key.role.value}, sites {_sites(key.sites)}); "
              "shown this once, keep it safe:")
        print(secret)
    elif args.key_command == "list":
        rows = [["NAME", "ROLE", "SITES", "STATE", "CREATED", "LAST USED"]]
        rows += [[k.name, k.role.value, _sites(k.sites),
                  "active" if k.active else f"revoked {_when(k.revoked_at)}",
                  _when(k.created_at), _when(k.last_used)] for k in accounts.api_keys()]
        print(_table(rows) if len(rows) > 1 else "no API keys")
    else:
        accounts.revoke_key(args.name, by=who)
        print(f"API key {args.name} revoked")
    return 0
