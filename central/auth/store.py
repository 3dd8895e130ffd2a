"""Accounts, API keys and sessions, kept in the central's Redis beside the incidents.

Nothing stored lets anyone sign in: passwords are Argon2id hashes (memory-hard: a stolen
Redis dump costs an attacker 64 MiB and a few hundred milliseconds per guess), API keys and
session cookies are stored as SHA-256 of their random secret (a key has 256 bits of entropy,
so a fast hash is enough, and each request checks one without an Argon2 delay). Every change
is written to the audit stream ``{ns}:auth:audit`` with who made it.

Keys (``{ns}:auth:`` prefix): ``user:{name}`` and ``key:{name}`` hashes, the ``users`` and
``keys`` sets, ``keyhash:{sha256}`` -> key name, ``session:{sha256}`` (expires when idle) and
``sessions:{user}`` (the user's sessions, ended when the account is disabled or its password
or role changes).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from typing import Any

import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from central.auth.model import (
    MIN_KEY_SECRET,
    AccountError,
    ApiKey,
    Conflict,
    NotFound,
    Principal,
    Role,
    User,
    check_key_name,
    check_password,
    check_sites,
    check_user_name,
)

log = logging.getLogger(__name__)

# KEYS: the key-name set, the key's hash, its digest index; ARGV: name, then field/value pairs
_CREATE_KEY = """
if redis.call('sadd', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('hset', KEYS[2], unpack(ARGV, 2))
redis.call('set', KEYS[3], ARGV[1])
return 1
"""

KEY_PREFIX = "pk_"
SESSION_IDLE_S = 8 * 3600  # a shift; the console's live feed keeps a session in use
SESSION_MAX_S = 24 * 3600  # sign in again every day at the latest
AUDIT_MAXLEN = 100_000


def sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _s(raw: Any) -> str:
    return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)


def _decode(raw: Any) -> dict[str, str]:
    """A Redis hash reply as text."""
    return {_s(k): _s(v) for k, v in dict(raw or {}).items()}


def _sites(raw: str) -> frozenset[str] | None:
    return frozenset(json.loads(raw)) if raw else None


def _sites_json(sites: frozenset[str] | None) -> str:
    return json.dumps(sorted(sites)) if sites is not None else ""


class Accounts:
    """Operator accounts, machine API keys and browser sessions in one Redis namespace."""

    def __init__(self, client: redis.Redis, ns: str = "perimeter", *,
                 hasher: PasswordHasher | None = None, session_idle_s: float = SESSION_IDLE_S,
                 session_max_s: float = SESSION_MAX_S):
        self.r = client
        self.ns = f"{ns}:auth"
        self.hasher = hasher or PasswordHasher()  # Argon2id, RFC 9106 low-memory profile
        self.session_idle_s = session_idle_s
        self.session_max_s = session_max_s
        self._dummy: str | None = None

    @property
    def dummy_hash(self) -> str:
        """Verified against when a user does not exist, so "no such user" costs the same time
        as "wrong password" and names cannot be probed by timing."""
        if self._dummy is None:
            self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy

    def key(self, *parts: str) -> str:
        return ":".join((self.ns, *parts))

    def audit(self, action: str, by: str, target: str, **data: Any) -> None:
        self.r.xadd(self.key("audit"), {"action": action, "by": by, "target": target,
                                        "data": json.dumps(data), "time": repr(time.time())},
                    maxlen=AUDIT_MAXLEN, approximate=True)

    def audit_log(self, count: int = 100) -> list[dict[str, Any]]:
        out = []
        entries: list[tuple[Any, Any]] = self.r.xrevrange(  # type: ignore[assignment]
            self.key("audit"), count=count)
        for _id, f in entries:
            d = _decode(f)
            out.append({**d, "data": json.loads(d.get("data", "{}")), "time": float(d["time"])})
        return out

    # -- users ---------------------------------------------------------------------------------

    def add_user(self, name: str, password: str, role: Role, sites: list[str] | None = None,
                 *, by: str) -> User:
        check_user_name(name)
        check_password(password, name)
        limit = check_sites(role, sites)
        now = time.time()
        sites_json = _sites_json(limit)
        pw_hash = self.hasher.hash(password)
        if not self.r.sadd(self.key("users"), name):
            raise Conflict(f"user {name!r} exists already")
        self.r.hset(self.key("user", name), mapping={
            "role": role.value, "sites": sites_json, "disabled": "0", "password": pw_hash,
            "created_at": repr(now), "created_by": by, "changed_at": repr(now)})
        self.audit("user_added", by, name, role=role.value, sites=sites_json or None)
        log.warning("account added", extra={"user": name, "role": role.value, "by": by})
        return self.user(name)

    def _raw_user(self, name: str) -> dict[str, str]:
        raw = self.r.hgetall(self.key("user", name))
        if not raw:
            raise NotFound(f"no user {name!r}")
        return _decode(raw)

    def user(self, name: str) -> User:
        d = self._raw_user(name)
        return User(name, Role(d["role"]), _sites(d.get("sites", "")), d["disabled"] == "1",
                    float(d["created_at"]), d.get("created_by", ""), float(d["changed_at"]))

    def users(self) -> list[User]:
        names = sorted(_s(n) for n in self.r.smembers(self.key("users")))
        out = []
        for n in names:
            try:
                out.append(self.user(n))
            except NotFound:
                continue
        return out

    def admins_left(self, without: str) -> int:
        return sum(1 for u in self.users()
                   if u.role is Role.ADMIN and not u.disabled and u.name != without)

    def set_password(self, name: str, password: str, *, by: str) -> None:
        self._raw_user(name)
        check_password(password, name)
        self.r.hset(self.key("user", name), mapping={
            "password": self.hasher.hash(password), "changed_at": repr(time.time())})
        self.end_sessions(name)
        self.audit("password_set", by, name)
        log.warning("account password set", extra={"user": name, "by": by})

    def set_role(self, name: str, role: Role, sites: list[str] | None, *, by: str) -> User:
        current = self.user(name)
        limit = check_sites(role, sites)
        if current.role is Role.ADMIN and role is not Role.ADMIN and not current.disabled \
                and self.admins_left(name) == 0:
            raise Conflict(f"{name!r} is the last admin; make another admin first")
        self.r.hset(self.key("user", name), mapping={
            "role": role.value, "sites": _sites_json(limit), "changed_at": repr(time.time())})
        self.end_sessions(name)
        self.audit("role_set", by, name, role=role.value, sites=_sites_json(limit) or None)
        log.warning("account role set", extra={"user": name, "role": role.value, "by": by})
        return self.user(name)

    def set_disabled(self, name: str, disabled: bool, *, by: str) -> User:
        current = self.user(name)
        if disabled and current.role is Role.ADMIN and self.admins_left(name) == 0:
            raise Conflict(f"{name!r} is the last admin; make another admin first")
        self.r.hset(self.key("user", name), mapping={
            "disabled": "1" if disabled else "0", "changed_at": repr(time.time())})
        if disabled:
            self.end_sessions(name)
        self.audit("user_disabled" if disabled else "user_enabled", by, name)
        log.warning("account disabled" if disabled else "account enabled",
                    extra={"user": name, "by": by})
        return self.user(name)

    def check_login(self, name: str, password: str) -> User | None:
        """The user if the password is right and the account enabled; None otherwise, in
        about the same time whichever it was."""
        try:
            d = self._raw_user(name)
        except NotFound:
            d = {}
        stored = d.get("password") or self.dummy_hash
        try:
            self.hasher.verify(stored, password)
            ok = bool(d)
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok or d.get("disabled") == "1":
            return None
        if self.hasher.check_needs_rehash(stored):  # parameters raised since it was set
            self.r.hset(self.key("user", name), "password", self.hasher.hash(password))
        return self.user(name)

    # -- sessions ------------------------------------------------------------------------------

    def open_session(self, user: User) -> tuple[str, str]:
        """A new session for a signed-in user: (cookie secret, anti-forgery token)."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        sid = sha256(token)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.key("session", sid), mapping={
            "user": user.name, "csrf": csrf, "created_at": repr(time.time())})
        pipe.expire(self.key("session", sid), int(self.session_idle_s))
        pipe.sadd(self.key("sessions", user.name), sid)
        pipe.expire(self.key("sessions", user.name), int(self.session_max_s))
        pipe.execute()
        return token, csrf

    def session(self, token: str) -> Principal | None:
        """The principal of a live session cookie (its idle timer restarted), else None."""
        sid = sha256(token)
        raw = self.r.hgetall(self.key("session", sid))
        if not raw:
            return None
        d = _decode(raw)
        if time.time() - float(d["created_at"]) > self.session_max_s:
            self.r.delete(self.key("session", sid))
            return None
        try:
            user = self.user(d["user"])
        except NotFound:
            return None
        if user.disabled:
            return None
        self.r.expire(self.key("session", sid), int(self.session_idle_s))
        return Principal("user", user.name, user.role, user.sites, session=sid, csrf=d["csrf"])

    def close_session(self, sid: str) -> None:
        user = self.r.hget(self.key("session", sid), "user")
        self.r.delete(self.key("session", sid))
        if user is not None:
            self.r.srem(self.key("sessions", _s(user)), sid)

    def end_sessions(self, name: str) -> int:
        sids = [_s(s) for s in self.r.smembers(self.key("sessions", name))]
        if sids:
            self.r.delete(*(self.key("session", s) for s in sids))
        self.r.delete(self.key("sessions", name))
        return len(sids)

    # -- API keys ------------------------------------------------------------------------------

    def add_key(self, name: str, role: Role, sites: list[str] | None = None, *,
                by: str) -> tuple[ApiKey, str]:
        """A new key: (its record, the secret, shown this once and never stored)."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        return self._store_key(name, secret, role, sites, by=by, action="key_added"), secret

    def import_key(self, name: str, secret: str, role: Role, *, by: str) -> ApiKey:
        """Take an existing shared secret (the old ``PERIMETER_API_TOKEN``) as a named key.
        The same secret again is a no-op; a revoked key is never brought back."""
        check_key_name(name)
        if len(secret) < MIN_KEY_SECRET:
            raise AccountError(f"an API key must be at least {MIN_KEY_SECRET} characters")
        digest = sha256(secret)
        if self.r.sismember(self.key("keys"), name):
            current = self.api_key(name)
            if not current.active:
                raise Conflict(f"key {name!r} was revoked; it is not imported again")
            stored = _s(self.r.hget(self.key("key", name), "sha256") or b"")
            if hmac.compare_digest(stored, digest):
                return current
            self.r.delete(self.key("keyhash", stored))
            self.r.hset(self.key("key", name), "sha256", digest)
            self.r.set(self.key("keyhash", digest), name)
            self.audit("key_replaced", by, name)
            return self.api_key(name)
        try:
            return self._store_key(name, secret, role, None, by=by, action="key_imported")
        except Conflict:  # another worker starting at the same time imported it first
            return self.import_key(name, secret, role, by=by)

    def _store_key(self, name: str, secret: str, role: Role, sites: list[str] | None, *,
                   by: str, action: str) -> ApiKey:
        check_key_name(name)
        limit = check_sites(role, sites)
        digest = sha256(secret)
        fields = {"role": role.value, "sites": _sites_json(limit), "sha256": digest,
                  "created_at": repr(time.time()), "created_by": by, "revoked_at": "",
                  "last_used": ""}
        # One script: whoever sees the name taken also sees the whole key (two workers
        # importing the legacy token at once must not read a half-made one).
        made = self.r.eval(_CREATE_KEY, 3, self.key("keys"), self.key("key", name),
                           self.key("keyhash", digest), name,
                           *[x for kv in fields.items() for x in kv])
        if not made:
            raise Conflict(f"key {name!r} exists already (revoked keys keep their name)")
        self.audit(action, by, name, role=role.value, sites=_sites_json(limit) or None)
        log.warning("api key added", extra={"key": name, "role": role.value, "by": by})
        return self.api_key(name)

    def api_key(self, name: str) -> ApiKey:
        raw = self.r.hgetall(self.key("key", name))
        if not raw:
            raise NotFound(f"no API key {name!r}")
        d = _decode(raw)
        return ApiKey(name, Role(d["role"]), _sites(d.get("sites", "")), float(d["created_at"]),
                      d.get("created_by", ""),
                      float(d["revoked_at"]) if d.get("revoked_at") else None,
                      float(d["last_used"]) if d.get("last_used") else None)

    def api_keys(self) -> list[ApiKey]:
        names = sorted(_s(n) for n in self.r.smembers(self.key("keys")))
        return [self.api_key(n) for n in names]

    def revoke_key(self, name: str, *, by: str) -> ApiKey:
        key = self.api_key(name)
        if not key.active:
            return key
        digest = _s(self.r.hget(self.key("key", name), "sha256") or b"")
        self.r.delete(self.key("keyhash", digest))
        self.r.hset(self.key("key", name), "revoked_at", repr(time.time()))
        self.audit("key_revoked", by, name)
        log.warning("api key revoked", extra={"key": name, "by": by})
        return self.api_key(name)

    def check_key(self, secret: str) -> Principal | None:
        """The principal of an active API key, else None."""
        digest = sha256(secret)
        name = self.r.get(self.key("keyhash", digest))
        if name is None:
            return None
        raw = self.r.hgetall(self.key("key", _s(name)))
        d = _decode(raw)
        if not d or d.get("revoked_at") or not hmac.compare_digest(d.get("sha256", ""), digest):
            return None
        now = time.time()
        if not d.get("last_used") or now - float(d["last_used"]) > 60:  # one write a minute
            self.r.hset(self.key("key", _s(name)), "last_used", repr(now))
        return Principal("key", _s(name), Role(d["role"]), _sites(d.get("sites", "")))
