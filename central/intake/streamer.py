"""Alarms from the broker into their partition stream (the intake side of ``central.streams``).

``StreamIntake`` hands each message to the gate (``central.intake.validate``: a bad one is
counted and dead-lettered right there, never entering a stream) and appends a good one, with
its site and its arrival time on the central's clock (``t``), to its zone group's partition,
a whole batch in one round trip. The incident worker that owns the partition applies it
(``central.incidents.worker``). Appends carry no ``MAXLEN``: an entry no worker has applied
yet is never trimmed (the owner trims what it applied).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import redis

from central.intake.mqtt import Incoming
from central.intake.validate import AlarmGate
from central.streams import PartitionKeys, partition_of

log = logging.getLogger(__name__)


class Entry(NamedTuple):
    """A checked alarm's partition stream entry, not yet appended."""

    stream: str
    fields: dict[Any, Any]


class StreamIntake:
    """Check, then append to the partition stream (raises redis errors: the caller retries
    and only then acknowledges the messages to the broker)."""

    def __init__(self, gate: AlarmGate, r: redis.Redis, keys: PartitionKeys,
                 group_of: Callable[[str], str]):
        self.gate = gate
        self.r = r
        self.keys = keys
        self.group_of = group_of  # zone -> its zone group (zones that merge share one)
        self.routed = 0

    def prepare(self, items: list[Incoming]) -> list[Entry]:
        """Check each message; the partition stream entry of each one admitted (the refused
        ones are counted and dead-lettered by the gate)."""
        out = []
        for item in items:
            admitted = self.gate.admit(item.payload, item.topic)
            if admitted is None:
                continue
            alarm, site = admitted.alarm, admitted.site
            p = partition_of(site, self.group_of(alarm.zone), self.keys.partitions)
            out.append(Entry(self.keys.stream(p), {
                "k": "alarm", "payload": item.payload, "site": site, "topic": item.topic,
                "t": f"{item.arrived:.6f}"}))
        return out

    def store(self, prepared: list[Entry]) -> int:
        """Append the entries in one round trip (redis errors propagate: the intake
        retries, acknowledging nothing meanwhile)."""
        if prepared:
            pipe = self.r.pipeline(transaction=False)
            for entry in prepared:
                pipe.xadd(entry.stream, entry.fields)
            pipe.execute()
        self.routed += len(prepared)
        return len(prepared)

    def reject(self, payload: bytes, topic: str, reason: str) -> None:
        self.gate.reject(payload, topic, reason)

    def unstored(self, prepared: list[Entry]) -> list[tuple[bytes, str]]:
        return [(bytes(e.fields["payload"]), str(e.fields["topic"])) for e in prepared]

    def many(self, items: list[Incoming]) -> int:
        """Check and store a batch; how many were appended."""
        return self.store(self.prepare(items))
