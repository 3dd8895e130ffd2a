"""Redis persistence of the incident book: an append-only event log and the current state.

Every change is written in one MULTI/EXEC transaction: the event goes to the stream
``{ns}:events`` (the audit trail: who acknowledged what, when, with which note) and the
incident's new state replaces its field in the hash ``{ns}:incidents``. A restarted
aggregator rebuilds its book from that hash, so nothing open is forgotten; the stream is
trimmed to ``retention_s`` (resolved incidents older than that leave the hash too).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis

from central.incidents.book import Incident, IncidentBook, Status
from central.streams import FENCED_WRITE, FencedOut
from zones.alarm import Severity

log = logging.getLogger(__name__)

DEADLETTER_REASON_BYTES = 500
DEADLETTER_TOPIC_BYTES = 256


def incident_from_dict(d: dict[str, Any]) -> Incident:
    return Incident(
        id=d["id"], site=d["site"], group=d["group"], zone=d["zone"],
        zone_kind=d["zone_kind"], risk=d["risk"], severity=Severity(d["severity"]),
        opened_at=d["opened_at"], last_activity=d["last_activity"],
        status=Status(d["status"]), late=bool(d.get("late", False)), alarms=d["alarms"],
        cameras=set(d["cameras"]), sources=set(d["sources"]), kinds=set(d["kinds"]),
        escalation_level=d["escalation_level"], escalated_at=d.get("escalated_at"),
        acknowledged_by=d["acknowledged_by"],
        acknowledged_at=d["acknowledged_at"], resolved_by=d["resolved_by"],
        resolved_at=d["resolved_at"], note=d["note"],
    )


def event_fields(kind: str, incident_id: str, data: dict[str, Any]) -> dict[Any, Any]:
    """One entry of the event log (``incident_id`` empty for site-wide events)."""
    return {"type": kind, "incident": incident_id, "t": f"{time.time():.6f}",
            "data": json.dumps(data, separators=(",", ":"))}


def state_json(inc: Incident) -> str:
    """An incident's current state as stored in the hash."""
    return json.dumps(inc.to_dict(), separators=(",", ":"))


@dataclass(frozen=True)
class Ack:
    """Stream entries a batch applied: acknowledged in the same atomic step as its writes,
    only while ``fence`` (lease key, expected value) still holds (``central.streams``)."""

    stream: str
    group: str
    ids: list[Any]
    fence: tuple[str, str]


@dataclass
class _Batch:
    events: list[dict[Any, Any]] = field(default_factory=list)
    states: dict[str, Incident] = field(default_factory=dict)
    after: list[Callable[[], None]] = field(default_factory=list)


Fences = Callable[[Incident], tuple[str, str] | None]


class RedisStore:
    """Reads and writes the book's state in Redis under the key prefix ``ns``.

    ``fence_for`` (set by the incident worker) gives, for an incident, the lease that must
    still be this process's for its state to be written; every write then goes through
    ``FENCED_WRITE`` and raises ``FencedOut`` (writing nothing) when a lease was lost.
    """

    def __init__(self, client: redis.Redis, ns: str = "perimeter",
                 retention_s: float = 30 * 86400, *, deadletter_max_entries: int = 10_000,
                 deadletter_payload_bytes: int = 4096):
        self.r = client
        self.ns = ns
        self.retention_s = retention_s
        self.deadletter_max_entries = deadletter_max_entries
        self.deadletter_payload_bytes = deadletter_payload_bytes
        self.events_key = f"{ns}:events"
        self.incidents_key = f"{ns}:incidents"
        self.deadletter_key = f"{ns}:deadletter"
        self.fence_for: Fences | None = None
        self._fenced_write = client.register_script(FENCED_WRITE)
        self._local = threading.local()

    @contextmanager
    def batch(self, ack: Ack | None = None) -> Iterator[None]:
        """Within this thread, collect ``record`` calls and write them in one atomic step
        when the block ends (each incident's state once, at its latest), acknowledging
        ``ack``'s entries in the same step. Callbacks given to ``after_write`` run only once
        that write succeeded. A worker applying a batch of stream entries pays one round trip
        instead of one per entry."""
        if getattr(self._local, "batch", None) is not None:
            yield  # already batching: the outer block writes
            return
        pending = _Batch()
        self._local.batch = pending
        try:
            yield
        finally:
            self._local.batch = None
        self._write(pending.events, list(pending.states.values()), ack)
        for fn in pending.after:
            fn()

    def _fences(self, states: list[Incident], ack: Ack | None) -> list[tuple[str, str]]:
        found = {ack.fence} if ack is not None else set()
        if self.fence_for is not None:
            for inc in states:
                f = self.fence_for(inc)
                if f is not None:
                    found.add(f)
        return sorted(found)

    def _write(self, events: list[dict[Any, Any]], states: list[Incident],
               ack: Ack | None) -> None:
        """Events and states (and the acknowledgement), all or nothing."""
        fences = self._fences(states, ack)
        if not fences:
            if events or states or ack is not None:
                pipe = self.r.pipeline(transaction=True)
                for fields in events:
                    pipe.xadd(self.events_key, fields)
                if states:
                    pipe.hset(self.incidents_key,
                              mapping={i.id: state_json(i) for i in states})
                if ack is not None and ack.ids:
                    pipe.xack(ack.stream, ack.group, *ack.ids)
                pipe.execute()
            return
        args: list[Any] = [len(fences), *(value for _, value in fences),
                           ack.group if ack is not None else "", len(events)]
        for fields in events:
            args += [fields["type"], fields["incident"], fields["t"], fields["data"]]
        args.append(len(states))
        for inc in states:
            args += [inc.id, state_json(inc)]
        if ack is not None:
            args += list(ack.ids)
        keys = [self.events_key, self.incidents_key,
                ack.stream if ack is not None else self.events_key,
                *(key for key, _ in fences)]
        if not self._fenced_write(keys=keys, args=args):
            raise FencedOut(f"lease lost: {[key for key, _ in fences]}; nothing written")

    def after_write(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once what this thread recorded is stored (now, outside a batch)."""
        pending: _Batch | None = getattr(self._local, "batch", None)
        if pending is None:
            fn()
        else:
            pending.after.append(fn)

    def record(self, kind: str, incident: Incident, data: dict[str, Any]) -> None:
        """Append one event and store the incident's state, atomically (inside a ``batch``:
        when the batch is written)."""
        pending: _Batch | None = getattr(self._local, "batch", None)
        fields = event_fields(kind, incident.id, data)
        if pending is not None:
            pending.events.append(fields)
            pending.states[incident.id] = incident
            return
        self._write([fields], [incident], None)

    def resync(self, book: IncidentBook) -> int:
        """Write every incident the book holds (after Redis came back, possibly empty)."""
        if book.incidents:
            self.r.hset(self.incidents_key, mapping={
                i.id: state_json(i)
                for i in book.incidents.values()})
        return len(book.incidents)

    def dead_letter(self, payload: bytes, reason: str, topic: str = "") -> None:
        """Keep a refused message with why it was refused, within the byte budget: the first
        ``deadletter_payload_bytes`` of the payload, its full size and SHA-256 (to match it
        with the sender's copy), at most ``deadletter_max_entries`` entries (README: "Dead
        letters" has the arithmetic)."""
        self.r.xadd(self.deadletter_key, {
            "reason": reason[:DEADLETTER_REASON_BYTES],
            "topic": topic[:DEADLETTER_TOPIC_BYTES], "t": f"{time.time():.6f}",
            "size": str(len(payload)), "sha256": hashlib.sha256(payload).hexdigest(),
            "payload": payload[:self.deadletter_payload_bytes],
        }, maxlen=self.deadletter_max_entries, approximate=True)

    def load(self, book: IncidentBook,
             where: Callable[[str, str], bool] | None = None) -> int:
        """Fill the book from Redis (only incidents whose ``(site, group)`` pass ``where``,
        when given); returns how many it loaded."""
        raw: dict[bytes, bytes] = self.r.hgetall(self.incidents_key)  # type: ignore[assignment]
        n = 0
        for value in raw.values():
            inc = incident_from_dict(json.loads(value))
            if where is None or where(inc.site, inc.group):
                book.restore(inc)
                n += 1
        return n

    def events(self, incident_id: str | None = None, count: int = 1000) -> list[dict[str, Any]]:
        """The newest events (optionally of one incident), oldest first."""
        out = []
        entries: list[tuple[bytes, dict[bytes, bytes]]] = self.r.xrevrange(  # type: ignore[assignment]
            self.events_key, count=count)
        for entry_id, fields in reversed(entries):
            f = {k.decode(): v.decode() for k, v in fields.items()}
            if incident_id is None or f["incident"] == incident_id:
                out.append({"id": entry_id.decode(), "type": f["type"],
                            "incident": f["incident"], "t": float(f["t"]),
                            "data": json.loads(f["data"])})
        return out

    def trim(self, book: IncidentBook, now: float) -> int:
        """Apply retention: drop old stream entries and resolved incidents past it."""
        cutoff = now - self.retention_s
        self.r.xtrim(self.events_key, minid=f"{int(cutoff * 1000)}-0", approximate=True)
        old = [i.id for i in book.incidents.values()
               if i.status is Status.RESOLVED and (i.resolved_at or now) < cutoff]
        if old:
            self.r.hdel(self.incidents_key, *old)
        book.forget_resolved(cutoff)
        return len(old)
