"""Redis persistence of the incident book: an append-only event log and the current state.

Every change is written in one MULTI/EXEC transaction: the event goes to the stream
``{ns}:events`` (the audit trail: who acknowledged what, when, with which note) and the
incident's new state replaces its field in the hash ``{ns}:incidents``. A restarted
aggregator rebuilds its book from that hash, so nothing open is forgotten; the stream is
trimmed to ``retention_s`` (resolved incidents older than that leave the hash too).
"""

from __future__ import annotations

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
from zones.alarm import Severity

log = logging.getLogger(__name__)


def incident_from_dict(d: dict[str, Any]) -> Incident:
    return Incident(
        id=d["id"], site=d["site"], group=d["group"], zone=d["zone"],
        zone_kind=d["zone_kind"], risk=d["risk"], severity=Severity(d["severity"]),
        opened_at=d["opened_at"], last_activity=d["last_activity"],
        status=Status(d["status"]), alarms=d["alarms"], cameras=set(d["cameras"]),
        sources=set(d["sources"]), kinds=set(d["kinds"]),
        escalation_level=d["escalation_level"], acknowledged_by=d["acknowledged_by"],
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


@dataclass
class _Batch:
    events: list[dict[Any, Any]] = field(default_factory=list)
    states: dict[str, Incident] = field(default_factory=dict)
    after: list[Callable[[], None]] = field(default_factory=list)


class RedisStore:
    """Reads and writes the book's state in Redis under the key prefix ``ns``."""

    def __init__(self, client: redis.Redis, ns: str = "perimeter",
                 retention_s: float = 30 * 86400):
        self.r = client
        self.ns = ns
        self.retention_s = retention_s
        self.events_key = f"{ns}:events"
        self.incidents_key = f"{ns}:incidents"
        self.deadletter_key = f"{ns}:deadletter"
        self._local = threading.local()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Within this thread, collect ``record`` calls and write them in one MULTI/EXEC
        when the block ends (each incident's state once, at its latest). Callbacks given
        to ``after_write`` run only once that write succeeded. A worker applying a batch of
        stream entries pays one round trip instead of one per entry."""
        if getattr(self._local, "batch", None) is not None:
            yield  # already batching: the outer block writes
            return
        pending = _Batch()
        self._local.batch = pending
        try:
            yield
        finally:
            self._local.batch = None
        if pending.events:
            pipe = self.r.pipeline(transaction=True)
            for fields in pending.events:
                pipe.xadd(self.events_key, fields)
            pipe.hset(self.incidents_key, mapping={
                i.id: state_json(i)
                for i in pending.states.values()})
            pipe.execute()
        for fn in pending.after:
            fn()

    def after_write(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once what this thread recorded is stored (now, outside a batch)."""
        pending: _Batch | None = getattr(self._local, "batch", None)
        if pending is None:
            fn()
        else:
            pending.after.append(fn)

    def record(self, kind: str, incident: Incident, data: dict[str, Any]) -> str:
        """Append one event and store the incident's state, atomically; returns the entry id
        (empty inside a ``batch``, which writes later)."""
        pending: _Batch | None = getattr(self._local, "batch", None)
        if pending is not None:
            pending.events.append(event_fields(kind, incident.id, data))
            pending.states[incident.id] = incident
            return ""
        pipe = self.r.pipeline(transaction=True)
        pipe.xadd(self.events_key, event_fields(kind, incident.id, data))
        pipe.hset(self.incidents_key, incident.id,
                  state_json(incident))
        entry_id, _ = pipe.execute()
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def resync(self, book: IncidentBook) -> int:
        """Write every incident the book holds (after Redis came back, possibly empty)."""
        if book.incidents:
            self.r.hset(self.incidents_key, mapping={
                i.id: state_json(i)
                for i in book.incidents.values()})
        return len(book.incidents)

    def dead_letter(self, payload: bytes, reason: str, topic: str = "",
                    max_len: int = 100_000) -> None:
        """Keep a rejected message (truncated to 64 KiB) with why it was rejected."""
        self.r.xadd(self.deadletter_key, {
            "reason": reason[:1000], "topic": topic[:500], "t": f"{time.time():.6f}",
            "payload": payload[:65536],
        }, maxlen=max_len, approximate=True)

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
