"""Who may do what at the central: roles, the people and machines behind each request.

A person signs in with their own account; a machine (an edge tool, a script, Prometheus) holds
a named API key. Either way the API knows *who* acts, so the incident log says "wang
acknowledged", never a name typed into a request body. Roles are ordered, each including the
ones below it:

* ``viewer``: sees incidents, statistics, the mode, metrics and the docs;
* ``operator``: also acknowledges and resolves incidents;
* ``supervisor``: also switches the emergency plan set (typhoon, flood, ...);
* ``admin``: also manages accounts and API keys.

A viewer or an operator may be limited to some sites (a park's own staff); supervisors and
admins always see every site, as the county command centre does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def at_least(self, other: Role) -> bool:
        return self.rank >= other.rank


class AccountError(ValueError):
    """A request about accounts that cannot be carried out; the message says why."""


class NotFound(AccountError):
    """No such account or key."""


class Conflict(AccountError):
    """The account or key exists already, or the change would leave no admin."""


USER_NAME = re.compile(r"^[a-z0-9][a-z0-9_.@-]{0,63}$")
KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SITE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MIN_PASSWORD = 12  # NIST SP 800-63B asks for 8 at least; an account that closes alarms, more
MAX_PASSWORD = 1024  # argon2 takes any length; a bound keeps a request from being huge
MIN_KEY_SECRET = 16


def check_user_name(name: str) -> str:
    if not USER_NAME.match(name):
        raise AccountError(f"user name {name!r}: 1-64 of a-z 0-9 _ . @ -, starting with a "
                           "letter or digit")
    return name


def check_key_name(name: str) -> str:
    if not KEY_NAME.match(name):
        raise AccountError(f"key name {name!r}: 1-64 of A-Z a-z 0-9 _ . -, starting with a "
                           "letter or digit")
    return name


def check_password(password: str, user: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password too short: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"password too long: at most {MAX_PASSWORD} characters")
    if password.strip().lower() == user.lower() or len(set(password)) < 4:
        raise AccountError("password too easy to guess (the user name, or a few characters "
                           "repeated)")
    return password


def check_sites(role: Role, sites: list[str] | None) -> frozenset[str] | None:
    """The sites an account is limited to (None: all); only viewers and operators may be."""
    if not sites:
        return None
    if role.at_least(Role.SUPERVISOR):
        raise AccountError(f"a {role.value} sees every site; site limits are for viewers and "
                           "operators")
    bad = [s for s in sites if not SITE_NAME.match(s)]
    if bad:
        raise AccountError(f"not a site id: {', '.join(map(repr, bad))}")
    return frozenset(sites)


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: a signed-in person (``user``) or an API key (``key``)."""

    kind: str  # "user" | "key"
    name: str
    role: Role
    sites: frozenset[str] | None = None  # None: every site
    session: str | None = None  # the session's id (a hash of its cookie), for users
    csrf: str | None = None  # the session's anti-forgery token

    @property
    def actor(self) -> str:
        """The name written into incident logs: the user's, or ``key:NAME``."""
        return self.name if self.kind == "user" else f"key:{self.name}"

    def sees(self, site: str) -> bool:
        return self.sites is None or site in self.sites

    def public(self) -> dict[str, object]:
        return {"kind": self.kind, "name": self.name, "role": self.role.value,
                "sites": sorted(self.sites) if self.sites is not None else None}


@dataclass(frozen=True)
class User:
    """An account as stored, less its password hash."""

    name: str
    role: Role
    sites: frozenset[str] | None
    disabled: bool
    created_at: float
    created_by: str
    changed_at: float

    def public(self) -> dict[str, object]:
        return {"name": self.name, "role": self.role.value,
                "sites": sorted(self.sites) if self.sites is not None else None,
                "disabled": self.disabled, "created_at": self.created_at,
                "created_by": self.created_by, "changed_at": self.changed_at}


@dataclass(frozen=True)
class ApiKey:
    """A machine's key as stored, less its hash (the secret itself is never stored)."""

    name: str
    role: Role
    sites: frozenset[str] | None
    created_at: float
    created_by: str
    revoked_at: float | None
    last_used: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, object]:
        return {"name": self.name, "role": self.role.value,
                "sites": sorted(self.sites) if self.sites is not None else None,
                "created_at": self.created_at, "created_by": self.created_by,
                "revoked_at": self.revoked_at, "last_used": self.last_used,
                "active": self.active}
