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

# Renew the lease only while it is still ours; release it the same way.
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

    def lease(self, p: int) -> str:
        return f"{self.ns}:lease:{p}"

    def reply(self, request_id: str) -> str:
        return f"{self.ns}:reply:{request_id}"


class Leases:
    """Heartbeat, assignment and the partition leases of one worker."""

    def __init__(self, r: redis.Redis, keys: PartitionKeys, worker_id: str, *,
                 lease_s: float = 10.0):
        self.r = r
        self.keys = keys
        self.worker_id = worker_id
        self.lease_ms = int(lease_s * 1000)
        self.owned: set[int] = set()
        self._renew = r.register_script(_RENEW)
        self._release = r.register_script(_RELEASE)

    def live_workers(self, now: float) -> list[str]:
        """Heartbeat ourselves, forget workers silent longer than a lease, list the rest."""
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(self.keys.workers, {self.worker_id: now})
        pipe.zremrangebyscore(self.keys.workers, "-inf", now - self.lease_ms / 1000)
        pipe.zrange(self.keys.workers, 0, -1)
        members = pipe.execute()[2]
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    def wanted(self, now: float) -> set[int]:
        return assignment(self.live_workers(now), self.keys.partitions).get(
            self.worker_id, set())

    def acquire(self, p: int) -> bool:
        """Take the lease of ``p`` if it is free or already ours (a restart of this id)."""
        key = self.keys.lease(p)
        if self.r.set(key, self.worker_id, nx=True, px=self.lease_ms):
            return True
        return bool(self._renew(keys=[key], args=[self.worker_id, self.lease_ms]))

    def renew(self, p: int) -> bool:
        return bool(self._renew(keys=[self.keys.lease(p)], args=[self.worker_id,
                                                                  self.lease_ms]))

    def release(self, p: int) -> None:
        self._release(keys=[self.keys.lease(p)], args=[self.worker_id])

    def leave(self) -> None:
        """Give up everything at a clean stop so others take over at once."""
        for p in sorted(self.owned):
            self.release(p)
        self.owned.clear()
        self.r.zrem(self.keys.workers, self.worker_id)


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
