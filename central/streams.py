"""Scale-out: partitioned Redis Streams between the MQTT intake and the incident workers.

Several central processes share one site's alarms. Each runs an MQTT intake (on a shared
subscription, so each message reaches one of them) that only validates a message and appends
it to the partition stream of its zone group, ``{ns}:in:{p}`` with ``p = crc32(site|group) %
partitions``, then acknowledges it to the broker. The incident work (merging, lifecycle,
plans) happens in the workers: each partition is read, through the consumer group ``central``,
by exactly one worker at a time, the one that holds the partition's lease. Because every
alarm of a zone group lands in one partition, one incident is only ever handled by one worker,
without a distributed lock per alarm.

Ownership: live workers keep a heartbeat in the sorted set ``{ns}:workers``; partition ``p``
belongs to the ``p % n``-th live worker in id order. A worker takes a partition by setting
``{ns}:lease:{p}`` (NX, with expiry), keeps it by renewing, and gives it up (delete) when the
assignment moves, evicting that partition's incidents from its memory first. A worker that
dies stops renewing; after ``lease_s`` its partitions are taken over, and the new owner loads
their incidents from the incident hash and claims the entries the dead one read but never
acknowledged (XAUTOCLAIM), so nothing that reached the stream is lost. Entries are
acknowledged (XACK) only after their effect is stored.

Time and fencing. Membership and leases run on the Redis server's clock only: the heartbeat
script stamps the worker with Redis ``TIME`` and forgets workers silent longer than a lease by
the same clock, and leases expire server-side (``PX``), so hosts whose clocks disagree do not
see each other as dead. Each acquisition of a lease draws a *fencing token* (``INCR
{ns}:fence:{p}``) and the lease holds ``{worker}:{token}``. Every write of incident state, and
the acknowledgement of a batch, goes through ``FENCED_WRITE``, which checks in the same atomic
step that the lease still holds that value: a worker paused past its lease (a GC pause, a
stopped VM) that wakes up mid-batch cannot store over the new owner's state; it gets
``FencedOut``, gives the partition up, and the entries stay pending for the new owner.

Entries are never trimmed before a worker applied them: the intake appends without ``MAXLEN``
and the owner trims only below the oldest pending (or last delivered) entry. A long outage of
every worker makes the streams grow instead (Redis ``maxmemory`` with ``noeviction`` then
refuses the intake's appends, which stops acknowledging, so the broker holds the rest); the
central warns and exports each stream's length well before (``backlog_warn``).

Redis must keep its data across restarts in a scale-out deployment (AOF): entries accepted
from the broker live only in the stream until a worker has applied them.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from typing import Any

import redis

log = logging.getLogger(__name__)

GROUP = "central"
DEFAULT_PARTITIONS = 8

# Take the lease of a partition if it is free or already this worker's (a restart of the same
# id), with a fresh fencing token; nil if another worker holds it.
_ACQUIRE = """
local cur = redis.call('get', KEYS[1])
if cur then
  local owner = string.match(cur, '^(.*):%d+$') or cur
  if owner ~= ARGV[1] then return false end
end
local value = ARGV[1] .. ':' .. redis.call('incr', KEYS[2])
redis.call('set', KEYS[1], value, 'PX', ARGV[2])
return value
"""
# Renew the lease only while it is still ours (same token); release it the same way.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
# Heartbeat on the Redis clock: stamp this worker, forget the silent, list the live.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('zadd', KEYS[1], now, ARGV[1])
redis.call('zremrangebyscore', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('zrange', KEYS[1], 0, -1)
"""
# Store a batch of incident changes and acknowledge its stream entries, only while every lease
# involved still holds its expected value. KEYS: events stream, incidents hash, partition
# stream (for XACK), then the lease keys. ARGV: lease count, expected values, group, event
# count, 4 fields per event (type, incident, t, data), state count, 2 per state (id, json),
# then the entry ids to acknowledge. Returns 1, or 0 (nothing written) when fenced out.
FENCED_WRITE = """
local k = tonumber(ARGV[1])
for j = 1, k do
  if redis.call('get', KEYS[3 + j]) ~= ARGV[1 + j] then return 0 end
end
local i = k + 2
local group = ARGV[i]
i = i + 1
local n = tonumber(ARGV[i])
i = i + 1
for _ = 1, n do
  redis.call('xadd', KEYS[1], '*', 'type', ARGV[i], 'incident', ARGV[i + 1],
             't', ARGV[i + 2], 'data', ARGV[i + 3])
  i = i + 4
end
local m = tonumber(ARGV[i])
i = i + 1
for _ = 1, m do
  redis.call('hset', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
if i <= #ARGV then
  redis.call('xack', KEYS[3], group, unpack(ARGV, i))
end
return 1
"""


class FencedOut(redis.RedisError):
    """A write refused because a lease it depends on is no longer this worker's (it was
    paused past the lease and another worker took the partition). Nothing was written."""


def partition_of(site: str, group: str, partitions: int) -> int:
    """The partition of a zone group (stable across processes and restarts)."""
    return zlib.crc32(f"{site}|{group}".encode()) % partitions


def assignment(workers: Sequence[str], partitions: int) -> dict[str, set[int]]:
    """Partitions per live worker: ``p`` goes to the ``p % n``-th worker in id order
    (balanced to within one partition)."""
    ids = sorted(set(workers))
    out: dict[str, set[int]] = {w: set() for w in ids}
    for p in range(partitions):
        if ids:
            out[ids[p % len(ids)]].add(p)
    return out


class PartitionKeys:
    """Key names of one namespace."""

    def __init__(self, ns: str, partitions: int):
        if not 1 <= partitions <= 1024:
            raise ValueError("partitions must be 1..1024")
        self.ns = ns
        self.partitions = partitions
        self.workers = f"{ns}:workers"

    def stream(self, p: int) -> str:
        return f"{self.ns}:in:{p}"

    def partition(self, stream: str) -> int:
        """The partition whose stream is named ``stream``."""
        return int(stream.rsplit(":", 1)[1])

    def lease(self, p: int) -> str:
        return f"{self.ns}:lease:{p}"

    def reply(self, request_id: str) -> str:
        return f"{self.ns}:reply:{request_id}"

    def fence(self, p: int) -> str:
        return f"{self.ns}:fence:{p}"


class Leases:
    """Heartbeat, assignment and the partition leases (with fencing tokens) of one worker."""

    def __init__(self, r: redis.Redis, keys: PartitionKeys, worker_id: str, *,
                 lease_s: float = 10.0):
        self.r = r
        self.keys = keys
        self.worker_id = worker_id
        self.lease_ms = int(lease_s * 1000)
        self.owned: set[int] = set()
        self.tokens: dict[int, str] = {}  # partition -> the lease value we hold ("id:token")
        self._acquire = r.register_script(_ACQUIRE)
        self._renew = r.register_script(_RENEW)
        self._release = r.register_script(_RELEASE)
        self._heartbeat = r.register_script(_HEARTBEAT)

    def live_workers(self) -> list[str]:
        """Heartbeat ourselves, forget workers silent longer than a lease, list the rest
        (all on the Redis server's clock)."""
        members: Any = self._heartbeat(keys=[self.keys.workers],
                                       args=[self.worker_id, self.lease_ms / 1000])
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    def wanted(self) -> set[int]:
        return assignment(self.live_workers(), self.keys.partitions).get(
            self.worker_id, set())

    def acquire(self, p: int) -> bool:
        """Take the lease of ``p`` if it is free or already ours (a restart of this id),
        with a new fencing token."""
        value = self._acquire(keys=[self.keys.lease(p), self.keys.fence(p)],
                              args=[self.worker_id, self.lease_ms])
        if not value:
            return False
        self.tokens[p] = value.decode() if isinstance(value, bytes) else str(value)
        return True

    def renew(self, p: int) -> bool:
        token = self.tokens.get(p)
        if token is None:
            return False
        return bool(self._renew(keys=[self.keys.lease(p)], args=[token, self.lease_ms]))

    def release(self, p: int) -> None:
        token = self.tokens.pop(p, None)
        if token is not None:
            self._release(keys=[self.keys.lease(p)], args=[token])

    def fence(self, p: int) -> tuple[str, str]:
        """(lease key, value it must hold) for a write to partition ``p``'s state; a
        partition this worker does not hold gets a value no lease ever has."""
        return self.keys.lease(p), self.tokens.get(p, f"{self.worker_id}:not-held")

    def leave(self) -> None:
        """Give up everything at a clean stop so others take over at once."""
        for p in sorted(self.owned):
            self.release(p)
        self.owned.clear()
        self.r.zrem(self.keys.workers, self.worker_id)


def stream_lengths(r: redis.Redis, keys: PartitionKeys) -> list[int]:
    """Entries in each partition stream (what is not yet applied, plus at most what the
    owner applied since its last trim, about a second's worth), in one round trip."""
    pipe = r.pipeline(transaction=False)
    for p in range(keys.partitions):
        pipe.xlen(keys.stream(p))
    return [int(n) for n in pipe.execute()]


def ensure_group(r: redis.Redis, stream: str) -> None:
    """Create the consumer group (and the stream) unless it exists."""
    try:
        r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def text(value: Any) -> str:
    """A Redis reply value as text (bytes from a client without decode_responses)."""
    return value.decode("utf-8") if isinstance(value, bytes | bytearray) else str(value)
