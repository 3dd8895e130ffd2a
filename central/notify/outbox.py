"""The webhook's durable outbox in a Redis stream: storing, reading back, acknowledging.

``enqueue`` appends the notification to the Redis stream ``{ns}:outbox:{notifier_id}``
(XADD) and returns; nothing is sent from the caller's thread, so a crash right after
``enqueue`` loses nothing. The sender (``central.webhook``) reads the stream through the
consumer group ``senders``. A delivered entry is removed with XACK + XDEL (one MULTI/EXEC);
a dead one is moved to the stream ``{ns}:outbox-dead:{notifier_id}`` with the reason.

The attempt count of an entry that failed is kept in the hash ``{ns}:outbox-attempts:{id}``
(so the dead-letter limit survives restarts); the next-attempt time lives in memory. Entries
read but not acknowledged by a previous process with the same consumer name (a crash) are
read back from the group's pending list (XREADGROUP ... 0) when the sender starts, and entries
of other consumer names idle longer than ``claim_idle_s`` are taken over with XAUTOCLAIM (then
and every ``claim_idle_s / 2``). Acknowledgements, dead letters and attempt counts are
written in batches (``_flush``), so while Redis is down they wait in memory until it is back.
``enqueue`` itself raises ``redis.RedisError`` then: the caller must know the notification
was not stored. The outbox is never trimmed.

The Redis client's ``socket_timeout`` must exceed the sender's ``poll_ms`` (XREADGROUP BLOCK);
redis-py's default of 5 s does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from central.notify.request import check_key, encode_body
from central.streams import text

# the name these logs had before the notify module was split, so log filters keep working
log = logging.getLogger(__name__)

GROUP = "senders"


# -- small helpers -----------------------------------------------------------------------------


def _raw(value: Any) -> bytes:
    return bytes(value) if isinstance(value, bytes | bytearray) else str(value).encode("utf-8")


def id_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a sortable pair: the order entries were enqueued in."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _stream_entries(resp: Any) -> list[tuple[str, dict[str, Any]]]:
    """(id, fields) pairs from an XREADGROUP/XAUTOCLAIM reply in any of redis-py's shapes.

    An entry deleted while pending comes back with empty fields.
    """
    out: list[tuple[str, dict[str, Any]]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif (isinstance(node, list | tuple) and len(node) >= 2
              and isinstance(node[0], bytes | str) and (node[1] is None
                                                        or isinstance(node[1], dict))):
            out.append((text(node[0]), {text(k): v for k, v in (node[1] or {}).items()}))
        elif isinstance(node, list | tuple):
            for item in node:
                if not isinstance(item, bytes | str):  # skip stream names
                    walk(item)

    walk(resp)
    return out


@dataclass
class OutboxEntry:
    """An entry the sender holds: read from the stream, not yet delivered or dead."""

    id: str
    key: str
    body: bytes
    attempts: int = 0
    next_at: float = 0.0  # time.monotonic()
    unreachable: bool = False  # the last attempt got no HTTP answer
    last_error: str = ""


class StreamOutbox:
    """The Redis side of a webhook sender: the entries it holds, what it owes Redis.

    ``WebhookNotifier`` builds on it; nothing here talks HTTP or runs a thread.
    """

    def __init__(self, notifier_id: str, redis_client: redis.Redis, *, ns: str,
                 consumer: str, claim_idle_s: float):
        self.notifier_id = notifier_id
        self.r = redis_client
        self.ns = ns
        self.consumer = consumer
        self.claim_idle_s = claim_idle_s
        self.stream_key = f"{ns}:outbox:{notifier_id}"
        self.dead_key = f"{ns}:outbox-dead:{notifier_id}"
        self.attempts_key = f"{ns}:outbox-attempts:{notifier_id}"
        self.enqueued = 0
        self._entries: dict[str, OutboxEntry] = {}
        self._acks: set[str] = set()  # delivered, XACK/XDEL not yet written
        self._deads: dict[str, tuple[OutboxEntry, str, int | None]] = {}  # not yet written
        self._dirty_attempts: dict[str, int] = {}
        self._recovered = False
        self._next_claim = 0.0
        self._group_ready = False

    def _ctx(self, **extra: Any) -> dict[str, Any]:
        return {"notifier": self.notifier_id, **extra}

    # -- producer side -------------------------------------------------------------------------

    def enqueue(self, payload: Mapping[str, Any], idempotency_key: str) -> str:
        """Store the notification in the outbox (durably, before returning); the entry id.

        Raises ValueError for a payload JSON cannot carry or a bad key, and
        ``redis.RedisError`` when Redis cannot store it.
        """
        check_key(idempotency_key)
        body = encode_body(payload)
        entry_id = text(self.r.xadd(self.stream_key, {
            "key": idempotency_key, "body": body, "t": f"{time.time():.6f}"}))
        self.enqueued += 1
        log.debug("notification enqueued", extra=self._ctx(entry=entry_id, key=idempotency_key))
        return entry_id

    def backlog(self) -> int:
        """Entries in the outbox not yet delivered or dead-lettered (XLEN)."""
        return int(self.r.xlen(self.stream_key))

    def dead_backlog(self) -> int:
        return int(self.r.xlen(self.dead_key))

    def replay_dead(self, count: int = 1000) -> int:
        """Move up to ``count`` dead letters back into the outbox (after fixing the cause,
        e.g. a wrong secret); they keep their idempotency keys. Returns how many moved."""
        moved = 0
        entries: Any = self.r.xrange(self.dead_key, count=count)
        for dead_id, raw in entries:
            fields = {text(k): v for k, v in raw.items()}
            pipe = self.r.pipeline(transaction=True)
            pipe.xadd(self.stream_key, {"key": fields.get("key", b""),
                                        "body": fields.get("body", b""),
                                        "t": f"{time.time():.6f}"})
            pipe.xdel(self.dead_key, dead_id)
            pipe.execute()
            moved += 1
        if moved:
            log.info("dead letters replayed", extra=self._ctx(count=moved))
        return moved

    # -- reading the stream (the sender's thread) ----------------------------------------------

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # id 0: everything already in the stream is undelivered by construction
            self.r.xgroup_create(self.stream_key, GROUP, id="0", mkstream=True)
            log.info("outbox consumer group created", extra=self._ctx(stream=self.stream_key))
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _xreadgroup(self, start: str, count: int, block: int | None) -> list[
            tuple[str, dict[str, Any]]]:
        self._ensure_group()
        try:
            resp = self.r.xreadgroup(GROUP, self.consumer, {self.stream_key: start},
                                     count=count, block=block)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis restarted without its data, or someone deleted the stream
            log.warning("outbox consumer group missing, recreating", extra=self._ctx())
            self._group_ready = False
            self._ensure_group()
            resp = self.r.xreadgroup(GROUP, self.consumer, {self.stream_key: start},
                                     count=count, block=block)
        return _stream_entries(resp)

    def _recover(self) -> None:
        """Take back this consumer's pending entries (a previous process that crashed)."""
        self._ensure_group()
        adopted: list[OutboxEntry] = []
        start = "0"
        while True:
            batch = self._xreadgroup(start, 100, None)
            for entry_id, fields in batch:
                entry = self._adopt(entry_id, fields)
                if entry is not None:
                    adopted.append(entry)
            if len(batch) < 100:
                break
            start = batch[-1][0]
        adopted += self._claim_orphans(restore=False)
        self._restore_attempts(adopted)
        self._recovered = True
        if adopted:
            log.info("outbox pending entries recovered", extra=self._ctx(count=len(adopted)))

    def _claim_orphans(self, restore: bool = True) -> list[OutboxEntry]:
        """XAUTOCLAIM entries of other consumers idle longer than ``claim_idle_s``."""
        claimed: list[OutboxEntry] = []
        cursor = "0-0"
        for _ in range(100):
            resp: Any = self.r.xautoclaim(self.stream_key, GROUP, self.consumer,
                                          int(self.claim_idle_s * 1000), start_id=cursor,
                                          count=100)
            cursor = text(resp[0])
            for entry_id, fields in _stream_entries(resp[1]):
                entry = self._adopt(entry_id, fields)
                if entry is not None:
                    claimed.append(entry)
            if cursor == "0-0":
                break
        self._next_claim = time.monotonic() + max(self.claim_idle_s / 2, 1.0)
        if restore:
            self._restore_attempts(claimed)
        if claimed:
            log.info("outbox entries claimed from other consumers",
                     extra=self._ctx(count=len(claimed)))
        return claimed

    def _restore_attempts(self, entries: list[OutboxEntry]) -> None:
        if not entries:
            return
        values: Any = self.r.hmget(self.attempts_key, [e.id for e in entries])
        for entry, value in zip(entries, values, strict=True):
            if value is not None:
                entry.attempts = max(entry.attempts, int(text(value)))

    def _adopt(self, entry_id: str, fields: dict[str, Any]) -> OutboxEntry | None:
        if entry_id in self._entries or entry_id in self._acks or entry_id in self._deads:
            return None
        if not fields:  # deleted while pending: only the pending record is left
            self._acks.add(entry_id)
            return None
        entry = OutboxEntry(entry_id, text(fields.get("key", "")),
                            _raw(fields.get("body", b"")))
        if "body" not in fields or not entry.key:
            self._deads[entry_id] = (entry, "malformed outbox entry (no key or body)", None)
            return None
        entry.next_at = time.monotonic()
        self._entries[entry_id] = entry
        return entry

    # -- writing back (batched) ----------------------------------------------------------------

    def _flush(self) -> None:
        """Write acknowledgements, dead letters and attempt counts (one MULTI/EXEC)."""
        if not (self._acks or self._deads or self._dirty_attempts):
            return
        done = [*self._acks, *self._deads]
        pipe = self.r.pipeline(transaction=True)
        for entry_id, (entry, reason, status) in self._deads.items():
            pipe.xadd(self.dead_key, {
                "entry": entry_id, "key": entry.key, "body": entry.body,
                "reason": reason[:1000], "status": "" if status is None else str(status),
                "attempts": str(entry.attempts), "notifier": self.notifier_id,
                "t": f"{time.time():.6f}",
            }, maxlen=100_000, approximate=True)
        if done:
            pipe.xack(self.stream_key, GROUP, *done)
            pipe.xdel(self.stream_key, *done)
            pipe.hdel(self.attempts_key, *done)
        dirty = {k: v for k, v in self._dirty_attempts.items() if k not in self._deads}
        if dirty:
            pipe.hset(self.attempts_key, mapping=dirty)  # type: ignore[arg-type]
        pipe.execute()
        self._acks.clear()
        self._deads.clear()
        self._dirty_attempts.clear()

