"""Alarms from the broker into their partition stream (the intake side of ``central.streams``).

``StreamIntake`` hands each message to the gate (``central.intake.validate``: a bad one is
counted and dead-lettered right there, never entering a stream) and appends a good one, with
its site, to its zone group's partition, a whole batch in one round trip. The incident worker
that owns the partition applies it (``central.incidents.worker``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from central.intake.validate import AlarmGate
from central.streams import PartitionKeys, partition_of

log = logging.getLogger(__name__)


class StreamIntake:
    """Check, then append to the partition stream (raises redis errors: the caller retries
    and only then acknowledges the message to the broker)."""

    def __init__(self, gate: AlarmGate, r: redis.Redis, keys: PartitionKeys,
                 group_of: Callable[[str], str], *, max_len: int = 200_000):
        self.gate = gate
        self.r = r
        self.keys = keys
        self.group_of = group_of  # zone -> its zone group (zones that merge share one)
        self.max_len = max_len
        self.routed = 0

    def __call__(self, payload: bytes, topic: str) -> bool:
        """True when queued for a worker, False when refused (and dead-lettered)."""
        return self.many([(payload, topic)]) == 1

    def many(self, items: list[tuple[bytes, str]]) -> int:
        """Check a batch and append the good ones in one round trip; returns how many were
        appended (the refused ones are dead-lettered)."""
        pipe = self.r.pipeline(transaction=False)
        now = f"{time.time():.6f}"
        n = 0
        for payload, topic in items:
            admitted = self.gate.admit(payload, topic)
            if admitted is None:
                continue
            alarm, site = admitted.alarm, admitted.site
            p = partition_of(site, self.group_of(alarm.zone), self.keys.partitions)
            pipe.xadd(self.keys.stream(p), {"k": "alarm", "payload": payload, "site": site,
                                            "topic": topic, "t": now},
                      maxlen=self.max_len, approximate=True)
            n += 1
        if n:
            pipe.execute()
        self.routed += n
        return n
