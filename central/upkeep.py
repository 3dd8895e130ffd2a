"""The central's periodic chores, off the alarm path: its clock, the site registry, the clock
it publishes for the edges, and the partition streams' backlog.

``Upkeep.run`` is called by the central's ticker about once a second and does each chore at
its own pace:

* the central clock (``central.clock.RedisClock``) is re-read from Redis ``TIME``;
* the clock is published, retained, on every registered site's ``wire.topics.central_clock``
  every ``publish_s``: an edge box compares it with its own clock and reports the offset in
  its status (``edge.uplink.session``), so an operator sees a box whose clock went wrong
  before its alarms are flagged late or future;
* the registry re-reads edge configs that changed (``central.registry``);
* the partition streams' lengths are read (``backlog``, exported as a metric) and a warning
  is logged when one crosses ``backlog_warn``: entries wait there until a worker applies
  them and are never trimmed before, so a long worker outage grows them (README: "Redis
  memory").
"""

from __future__ import annotations

import logging
import time

import paho.mqtt.client as mqtt
import redis

from central.clock import RedisClock
from central.registry import Registry
from central.streams import PartitionKeys, stream_lengths
from wire import messages, topics

log = logging.getLogger(__name__)

CHECK_EVERY_S = 5.0


class Upkeep:
    """See the module docstring."""

    def __init__(self, clock: RedisClock, r: redis.Redis, keys: PartitionKeys,
                 publisher: mqtt.Client, registry: Registry | None, *, publish_s: float,
                 backlog_warn: int, worker_id: str):
        self.clock = clock
        self.r = r
        self.keys = keys
        self.publisher = publisher
        self.registry = registry
        self.publish_s = publish_s
        self.backlog_warn = backlog_warn
        self.worker_id = worker_id
        self.backlog: list[int] = []
        self._over: set[int] = set()
        self._next_publish = 0.0
        self._next_check = 0.0

    def run(self) -> None:
        """Whatever is due (Redis errors propagate: the ticker logs them and goes on)."""
        self.clock.sync()
        now = time.monotonic()
        if now >= self._next_publish:
            self._next_publish = now + self.publish_s
            self.publish_clock()
        if now >= self._next_check:
            self._next_check = now + CHECK_EVERY_S
            if self.registry is not None:
                self.registry.refresh()
            self.check_backlog()

    def publish_clock(self) -> int:
        """The central's time on every registered site's clock topic (retained, QoS 0: a
        tick lost is replaced by the next); how many were published. Not before the clock
        was read from Redis once (the host's clock is not the central's)."""
        if self.registry is None or not self.clock.synced:
            return 0
        payload = messages.central_clock(self.clock(), self.worker_id)
        for site in self.registry.sites:
            self.publisher.publish(topics.central_clock(site), payload, qos=0, retain=True)
        return len(self.registry.sites)

    def check_backlog(self) -> None:
        """Read every partition stream's length; warn once each time one crosses the mark."""
        self.backlog = stream_lengths(self.r, self.keys)
        for p, n in enumerate(self.backlog):
            if n >= self.backlog_warn and p not in self._over:
                self._over.add(p)
                log.warning("partition stream backlog high: alarms wait for a worker (are "
                            "workers running? is Redis near maxmemory?)", extra={
                                "partition": p, "entries": n, "warn_at": self.backlog_warn})
            elif n < self.backlog_warn // 2 and p in self._over:
                self._over.discard(p)
                log.info("partition stream backlog back to normal",
                         extra={"partition": p, "entries": n})
