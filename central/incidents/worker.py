"""The incident worker: reads its partitions' streams and applies each entry exactly once.

See ``central.streams`` for the partitioning and the leases. The worker is one thread: it
rebalances about once a second (heartbeat, renew, take or give up partitions), then reads up
to ``batch`` entries from all its partitions with one blocking XREADGROUP, applies a
partition's entries in order through the ``Aggregator`` and stores their effects and
acknowledges them in one write fenced by the partition's lease. An entry whose effect could
not be stored stays pending and is applied again once Redis answers (or by the partition's
new owner); the book's ``event_id`` check makes a second application a no-op. Commands
(acknowledge, resolve) from an API in another process travel the same stream, so they are
ordered with the alarms of their incident.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import redis

from central.incidents.aggregator import Aggregator
from central.incidents.book import Incident, LifecycleError
from central.incidents.store import Ack
from central.streams import (
    GROUP,
    FencedOut,
    Leases,
    PartitionKeys,
    ensure_group,
    partition_of,
    text,
)
from wire import topics
from zones.alarm import Alarm

log = logging.getLogger(__name__)

Entry = tuple[bytes, dict[bytes, bytes]]


class StreamWorker:
    """Owns some partitions and applies their entries to one aggregator."""

    def __init__(self, aggregator: Aggregator, keys: PartitionKeys, worker_id: str, *,
                 lease_s: float = 10.0, rebalance_s: float = 1.0, batch: int = 256,
                 block_ms: int = 100):
        self.aggregator = aggregator
        self.r = aggregator.store.r
        self.keys = keys
        self.worker_id = worker_id
        self.leases = Leases(self.r, keys, worker_id, lease_s=lease_s)
        self.rebalance_s = rebalance_s
        self.batch = batch
        self.block_ms = block_ms
        self.applied = 0
        self.redis_errors = 0
        self.skipped = 0
        self._recover: set[int] = set()
        self._stop = threading.Event()
        self._balanced = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"worker-{worker_id}",
                                        daemon=True)
        aggregator.store.fence_for = self._fence_for
        self.fenced_out = 0

    def _fence_for(self, inc: Incident) -> tuple[str, str]:
        """The lease an incident's state may only be written under (``central.streams``)."""
        return self.leases.fence(partition_of(inc.site, inc.group, self.keys.partitions))

    @property
    def owned(self) -> set[int]:
        return self.leases.owned

    def owns(self, site: str, group: str) -> bool:
        return partition_of(site, group, self.keys.partitions) in self.leases.owned

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the thread and wait for its first rebalance (partitions taken or not)."""
        self._thread.start()
        if not self._balanced.wait(timeout_s):
            raise ConnectionError(f"worker {self.worker_id}: no answer from Redis within "
                                  f"{timeout_s:g}s")

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        try:
            self.leases.leave()
        except redis.RedisError:
            log.warning("worker could not release its leases", extra={"worker": self.worker_id})

    def _loop(self) -> None:
        next_balance, delay, failing = 0.0, 0.05, False
        while not self._stop.is_set():
            try:
                if failing:
                    self._recovered()
                    failing, delay = False, 0.05
                if time.monotonic() >= next_balance:
                    self.rebalance()
                    self._balanced.set()
                    next_balance = time.monotonic() + self.rebalance_s
                self.poll()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self.redis_errors += 1
                failing = True
                log.warning("worker: redis unavailable", extra={"error": str(exc),
                                                                "retry_in_s": delay})
                self._stop.wait(delay)
                delay = min(delay * 2, 2.0)
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    log.exception("worker: redis refused a command")
                    self._stop.wait(1.0)
                failing = True  # the stream or group is gone: Redis came back empty
            except Exception:
                log.exception("worker: unexpected error; continuing")
                self._stop.wait(1.0)

    def _recovered(self) -> None:
        """Redis answers again (perhaps empty): groups back, book written again, pending
        entries re-read."""
        for p in self.leases.owned:
            ensure_group(self.r, self.keys.stream(p))
        with self.aggregator.lock:
            n = self.aggregator.store.resync(self.aggregator.book)
        self._recover |= self.leases.owned
        log.warning("worker: redis back, incidents written again", extra={"incidents": n})

    def rebalance(self) -> None:
        """Heartbeat, then give up, renew (and trim) and take partitions as the live workers'
        assignment says (membership and leases on the Redis server's clock)."""
        want = self.leases.wanted()
        owned = self.leases.owned
        for p in sorted(owned - want):
            self._give_up(p)
        for p in sorted(owned & want):
            if not self.leases.renew(p):
                log.warning("worker lost a lease", extra={"partition": p})
                self._evict(p)
            else:
                self._trim(p)
        for p in sorted(want - owned):
            if self.leases.acquire(p):
                self._adopt(p)

    def _trim(self, p: int) -> None:
        """Drop entries every consumer is done with (older than the oldest pending one, or
        than the group's last delivered one): the stream holds only work in progress."""
        stream = self.keys.stream(p)
        summary: Any = self.r.xpending(stream, GROUP)
        if summary["pending"]:
            floor = text(summary["min"])
        else:
            groups: Any = self.r.xinfo_groups(stream)
            mine = [g for g in groups if text(g["name"]) == GROUP]
            if not mine:
                return
            floor = text(mine[0]["last-delivered-id"])
        if floor != "0-0":
            self.r.xtrim(stream, minid=floor, approximate=False)  # once a second: exact is cheap

    def _adopt(self, p: int) -> None:
        ensure_group(self.r, self.keys.stream(p))
        with self.aggregator.lock:
            n = self.aggregator.store.load(
                self.aggregator.book,
                where=lambda site, group: partition_of(site, group,
                                                       self.keys.partitions) == p)
        self.leases.owned.add(p)
        self._recover.add(p)
        log.info("worker took a partition", extra={"worker": self.worker_id, "partition": p,
                                                   "incidents": n})

    def _evict(self, p: int) -> None:
        self.leases.owned.discard(p)
        self.leases.tokens.pop(p, None)
        self._recover.discard(p)
        with self.aggregator.lock:
            self.aggregator.book.evict(
                lambda inc: partition_of(inc.site, inc.group, self.keys.partitions) == p)

    def _give_up(self, p: int) -> None:
        self.leases.release(p)  # while its token is still known
        self._evict(p)
        log.info("worker gave up a partition", extra={"worker": self.worker_id,
                                                      "partition": p})

    def poll(self) -> int:
        """Apply pending entries of newly taken partitions, then one batch of new ones."""
        done = 0
        for p in sorted(self._recover):
            done += self._drain_pending(p)
            self._recover.discard(p)
        if not self.leases.owned:
            self._stop.wait(self.block_ms / 1000)
            return done
        streams = {self.keys.stream(p): ">" for p in sorted(self.leases.owned)}
        resp: Any = self.r.xreadgroup(GROUP, self.worker_id, streams,  # type: ignore[arg-type]
                                      count=self.batch, block=self.block_ms)
        for stream, entries in resp or []:
            done += self._apply(text(stream), entries)
        return done

    def _drain_pending(self, p: int) -> int:
        """Entries read earlier but never acknowledged: by this id (own restart), then by
        anyone (a dead owner's), in stream order."""
        stream, done = self.keys.stream(p), 0
        while True:
            resp: Any = self.r.xreadgroup(GROUP, self.worker_id, {stream: "0"},
                                          count=self.batch)
            entries = resp[0][1] if resp else []
            if not entries:
                break
            done += self._apply(stream, entries)
        start = "0-0"
        while True:
            claimed: Any = self.r.xautoclaim(stream, GROUP, self.worker_id, 0,
                                             start_id=start, count=self.batch)
            start, entries = text(claimed[0]), claimed[1]
            done += self._apply(stream, [e for e in entries if e and e[1] is not None])
            if start == "0-0":
                break
        return done

    def _apply(self, stream: str, entries: list[Entry]) -> int:
        """Apply a batch, then store its effects and acknowledge it in one fenced write. If
        Redis fails before that write, nothing is acknowledged and the whole batch is applied
        again; if the partition's lease was lost meanwhile (this worker was paused past it),
        nothing is written and the partition is given up to its new owner."""
        if not entries:
            return 0
        p = self.keys.partition(stream)
        ack = Ack(stream, GROUP, [entry_id for entry_id, _ in entries], self.leases.fence(p))
        try:
            with self.aggregator.batch(ack):
                for entry_id, fields in entries:
                    self._one(entry_id, fields)
        except FencedOut:
            self.fenced_out += 1
            log.warning("worker fenced out: its lease was taken while it applied a batch; "
                        "nothing stored, partition given up",
                        extra={"worker": self.worker_id, "partition": p,
                               "entries": len(entries)})
            self._evict(p)
            return 0
        self.applied += len(entries)
        return len(entries)

    def _one(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        """One entry; a broken one (a bug, not bad input: the intake's gate checked it) is
        logged and skipped rather than blocking its partition forever."""
        try:
            self._dispatch(entry_id, fields)
        except redis.RedisError:
            raise
        except Exception:
            self.skipped += 1
            log.exception("worker: entry could not be applied; skipped",
                          extra={"fields": sorted(text(k) for k in fields)})

    def _dispatch(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        kind = fields.get(b"k", b"")
        if kind == b"alarm":
            self._alarm(entry_id, fields)
        elif kind == b"cmd":
            self._command(fields)
        else:
            log.warning("worker: unknown stream entry dropped", extra={"k": text(kind)})

    def _alarm(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        """An alarm the intake's gate checked: decoded, not validated again. It arrived when
        the intake stamped it (``t``, the central clock), or, from an intake older than that
        stamp, when Redis appended it (the entry id's milliseconds, Redis's clock)."""
        alarm = Alarm.model_validate_json(fields[b"payload"])
        stamp = fields.get(b"t")
        arrived = float(stamp) if stamp else int(text(entry_id).split("-")[0]) / 1000
        site = fields.get(b"site")
        if site is None:  # appended by an intake older than the site field
            parts = topics.parse_alarm(text(fields[b"topic"]))
            if parts is None:
                raise ValueError("stream entry without site or alarm topic")
            self.aggregator.apply(alarm, parts.site, arrived)
        else:
            self.aggregator.apply(alarm, text(site), arrived)

    def _command(self, fields: dict[bytes, bytes]) -> None:
        op, incident = text(fields[b"op"]), text(fields[b"incident"])
        args = json.loads(fields.get(b"args", b"{}"))
        try:
            if op == "acknowledge":
                inc = self.aggregator.acknowledge(incident, args["by"])
            elif op == "resolve":
                inc = self.aggregator.resolve(incident, args["by"], args["note"])
            else:
                raise LifecycleError(f"unknown operation {op!r}")
            reply: dict[str, Any] = {"ok": True, "incident": inc.to_dict()}
        except KeyError:
            reply = {"ok": False, "code": 404, "error": f"no incident {incident}"}
        except LifecycleError as exc:
            reply = {"ok": False, "code": 409, "error": str(exc)}
        key = self.keys.reply(text(fields[b"reply"]))

        def answer() -> None:  # only once the change is stored
            pipe = self.r.pipeline(transaction=False)
            pipe.lpush(key, json.dumps(reply))
            pipe.expire(key, 60)
            pipe.execute()

        self.aggregator.store.after_write(answer)
