"""Failed sign-ins and bad API keys: counted per source, logged, and slowed to a stop.

A guesser gets ``PER_USER`` wrong passwords for one account from one address, and
``PER_ADDRESS`` failures of any kind (passwords, unknown users, bad keys) from one address,
within ``WINDOW_S``; after that the address is answered 429 with ``Retry-After`` until the
window ends. An account is deliberately never locked for everyone: an attacker who could lock
the duty officer out of the console by typing her name wrong five times would have a button
that silences the command centre. Every failure is logged with its source address; a blocked
address is logged once per window, so a flood cannot flood the journal too.

Counters are fixed windows in Redis (``INCR`` + ``EXPIRE``), shared by every worker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

log = logging.getLogger(__name__)

WINDOW_S = 15 * 60
PER_USER = 5  # wrong passwords for one account from one address
PER_ADDRESS = 30  # failures of any kind from one address


@dataclass(frozen=True)
class Blocked:
    """An address (or address and account) over its limit; ``retry_after_s`` until free."""

    retry_after_s: int
    scope: str


class Throttle:
    """Failed-attempt counters in Redis under ``{ns}:fail:``."""

    def __init__(self, client: redis.Redis, ns: str, *, window_s: int = WINDOW_S,
                 per_user: int = PER_USER, per_address: int = PER_ADDRESS):
        self.r = client
        self.ns = f"{ns}:fail"
        self.window_s, self.per_user, self.per_address = window_s, per_user, per_address

    def _keys(self, address: str, user: str | None) -> list[tuple[str, int, str]]:
        out = [(f"{self.ns}:addr:{address}", self.per_address, "address")]
        if user is not None:
            out.append((f"{self.ns}:user:{user}:{address}", self.per_user, "account"))
        return out

    def blocked(self, address: str, user: str | None = None) -> Blocked | None:
        """Whether attempts from ``address`` (for ``user``) are refused right now."""
        keys = self._keys(address, user)
        counts = self.r.mget([k for k, _, _ in keys])
        for (key, limit, scope), raw in zip(keys, counts, strict=True):
            if raw is not None and int(raw) >= limit:
                ttl = int(self.r.ttl(key))
                blocked = Blocked(max(ttl, 1), scope)
                if self.r.set(f"{key}:logged", "1", nx=True, ex=max(ttl, 1)):
                    log.warning("sign-in attempts blocked", extra={
                        "address": address, "user": user, "scope": scope,
                        "retry_after_s": blocked.retry_after_s})
                return blocked
        return None

    def failed(self, address: str, user: str | None, what: str) -> None:
        """Count one failure and log it with its source address."""
        pipe = self.r.pipeline(transaction=False)
        for key, _, _ in self._keys(address, user):
            pipe.incr(key)
            pipe.expire(key, self.window_s, nx=True)
        pipe.execute()
        log.warning("authentication failed", extra={"address": address, "user": user,
                                                    "reason": what})

    def succeeded(self, address: str, user: str) -> None:
        """A right password clears that account's count from that address."""
        self.r.delete(f"{self.ns}:user:{user}:{address}")
